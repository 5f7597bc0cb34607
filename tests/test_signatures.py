"""Signed API requests (RFC 9421) on ``api_key`` authenticators with ``"signatures":
"required"``: the RFC's own examples (Appendix B.2.5, B.2.6) verify over the signature
base built from the request as authz describes it; signatures made here by hand, per
the RFC (the base written out line by line, signed with ``cryptography`` or ``hmac``),
are accepted, and each field wrong in turn is refused; replays are refused by the store
whichever worker of a real server sees them. The doors: tests/test_front_doors.py."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import subprocess
import time
from urllib.parse import urlsplit

import http_sf
import pytest
import requests
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from authz.adapters.common import render
from authz.admin import Admin
from authz.authenticators import message_signatures
from authz.cli import main
from authz.credentials import apikeys, request_signing
from authz.decision import Reason
from authz.policy import PolicyError
from authz.request import CheckRequest
from tests.conftest import (
    BIN,
    ROOT,
    allowed_once_then_refused_by_another_worker,
    engine_for,
    explain_json,
    logged_decisions,
    write_policy,
)

HOST = "api.example.com"
URL = f"https://{HOST}/orders/7"
CLIENT = ed25519.Ed25519PrivateKey.generate()

# RFC 9421 Appendix B.1.4 (test-key-ed25519) and B.1.5 (test-shared-secret).
RFC_ED25519_PRIVATE = (b"-----BEGIN PRIVATE KEY-----\n"
                       b"MC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n"
                       b"-----END PRIVATE KEY-----\n")
RFC_ED25519_PUBLIC = (b"-----BEGIN PUBLIC KEY-----\n"
                      b"MCowBQYDK2VwAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=\n"
                      b"-----END PUBLIC KEY-----\n")
RFC_SHARED_SECRET = "uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ=="
# The RFC's example request (Appendix B.2): POST /foo?param=Value&Pet=dog to example.com.
RFC_HEADERS = [("Host", "example.com"), ("Date", "Tue, 20 Apr 2021 02:07:55 GMT"),
               ("Content-Type", "application/json"),
               ("Content-Digest", "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdV"
                                  "LvRwEmTHWXvJwew==:"),
               ("Content-Length", "18")]
RFC_B26_BASE = (
    '"date": Tue, 20 Apr 2021 02:07:55 GMT\n'
    '"@method": POST\n'
    '"@path": /foo\n'
    '"@authority": example.com\n'
    '"content-type": application/json\n'
    '"content-length": 18\n'
    '"@signature-params": ("date" "@method" "@path" "@authority" "content-type" "content-length")'
    ';created=1618884473;keyid="test-key-ed25519"')
RFC_B25_BASE = (
    '"date": Tue, 20 Apr 2021 02:07:55 GMT\n'
    '"@authority": example.com\n'
    '"content-type": application/json\n'
    '"@signature-params": ("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret"')


def rfc_request(signature_input: str, signature: str) -> CheckRequest:
    return CheckRequest.from_url("POST", "https://example.com/foo?param=Value&Pet=dog",
                                 [*RFC_HEADERS, ("Signature-Input", signature_input), ("Signature", signature)])


@pytest.mark.parametrize(("label", "keyid", "alg", "stored", "base", "signature"), [
    ("sig-b26", "test-key-ed25519", "ed25519", RFC_ED25519_PUBLIC.decode(), RFC_B26_BASE,
     "wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw=="),
    ("sig-b25", "test-shared-secret", "hmac-sha256", RFC_SHARED_SECRET, RFC_B25_BASE,
     "pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8="),
])
def test_the_rfc_examples_verify(label, keyid, alg, stored, base, signature):
    """Appendix B.2.6 (Ed25519) and B.2.5 (HMAC-SHA256): the signature base built from
    the request as authz describes it is the RFC's, byte for byte, and the RFC's
    signature verifies over it; one changed bit of the signature, or of a covered
    header, does not."""
    params = base.rpartition('"@signature-params": ')[2]
    request = rfc_request(f"{label}={params}", f"{label}=:{signature}:")
    chosen = message_signatures.choose(request, keyid)
    fields = tuple(name for name, _ in chosen.components if not name.startswith("@"))
    view = message_signatures.message_view(request, fields)
    from http_message_signatures import HTTPMessageSigner, algorithms  # the base as the library writes it

    prepared = HTTPMessageSigner(signature_algorithm=algorithms.HMAC_SHA256).prepare(
        view, key_id=keyid, created=None, label=label, include_alg=False,
        covered_component_ids=[name for name, _ in chosen.components])
    assert prepared.signature_base.decode().rpartition("\n")[0] == base.rpartition("\n")[0]
    if alg == "ed25519":  # independently of authz: the RFC's signature over the RFC's base
        serialization.load_pem_public_key(RFC_ED25519_PUBLIC).verify(base64.b64decode(signature), base.encode())
    else:
        digest = hmac.new(base64.b64decode(RFC_SHARED_SECRET), base.encode(), hashlib.sha256).digest()
        assert base64.b64encode(digest).decode() == signature
    forever = 10 ** 10
    message_signatures.verify_signature(request, chosen, keyid, alg, stored, forever, 5)
    tampered = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    request = rfc_request(f"{label}={params}", f"{label}=:{tampered}:")
    with pytest.raises(message_signatures.SignatureError, match="verification failed"):
        message_signatures.verify_signature(request, message_signatures.choose(request, keyid), keyid, alg, stored,
                                            forever, 5)
    request = CheckRequest.from_url("POST", "https://example.com/foo?param=Value&Pet=dog",
                                    [*[(n, "text/plain" if n == "Content-Type" else v) for n, v in RFC_HEADERS],
                                     ("Signature-Input", f"{label}={params}"), ("Signature", f"{label}=:{signature}:")])
    with pytest.raises(message_signatures.SignatureError, match="verification failed"):
        message_signatures.verify_signature(request, message_signatures.choose(request, keyid), keyid, alg, stored,
                                            forever, 5)


# -- signatures made here, by hand, per RFC 9421 §2.3-2.5 ---------------------------------------------


def sign(key_id: str, key, *, method="GET", url=URL, components=("@method", "@target-uri"), created=None,
         nonce: str | None = "", alg: str | None = "", label="sig1", keyid=None, headers=(), extra="") -> list:
    """The Signature-Input and Signature headers a client sends: the signature base
    written out line by line (RFC 9421 §2.5), signed with ``key`` (an Ed25519 private
    key, or the HMAC secret as base64). ``nonce=""`` / ``alg=""``: a fresh nonce, the
    key's alg; None leaves them out."""
    parts = urlsplit(url)
    fields = {name.lower(): value for name, value in headers}
    values = {"@method": method, "@target-uri": url, "@authority": parts.netloc.lower(), "@path": parts.path,
              "@query": "?" + parts.query}
    algorithm = "ed25519" if isinstance(key, ed25519.Ed25519PrivateKey) else "hmac-sha256"
    params = "(" + " ".join(f'"{c}"' for c in components) + ")"
    params += f";created={int(time.time()) if created is None else created}"
    params += f';keyid="{key_id if keyid is None else keyid}"'
    if alg is not None:
        params += f';alg="{alg or algorithm}"'
    if nonce is not None:
        params += f';nonce="{nonce or secrets.token_urlsafe(16)}"'
    params += extra
    base = "\n".join(f'"{c}": {values[c] if c.startswith("@") else fields[c]}' for c in components)
    base += f'\n"@signature-params": {params}'
    if algorithm == "ed25519":
        signature = key.sign(base.encode())
    else:
        signature = hmac.new(base64.b64decode(key), base.encode(), hashlib.sha256).digest()
    return [("Signature-Input", f"{label}={params}"),
            ("Signature", f"{label}=:{base64.b64encode(signature).decode()}:"), *headers]


def public_pem(private) -> bytes:
    return private.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture
def keys(store):
    """Three keys of one partner: Ed25519-signing, HMAC-signing, and plain. {name: (id, key, signing key)}."""
    admin = Admin(store).keys
    ed, ed_key = admin.create("partner", ["orders:read"], signing=request_signing.ed25519_public(public_pem(CLIENT)))
    material, secret = request_signing.new_hmac()
    mac, mac_key = admin.create("partner", ["orders:read"], signing=material)
    plain, plain_key = admin.create("partner", ["orders:read"])
    return {"ed": (ed.id, ed_key, CLIENT), "hmac": (mac.id, mac_key, secret), "plain": (plain.id, plain_key, None)}


@pytest.fixture
def decider(store, policy_dir):
    """decide(key, headers, method, url) with one route whose api_key authenticator has ``options``."""

    def make(**options):
        config = {"type": "api_key", "realm": "api", "signatures": "required", **options}
        write_policy(policy_dir, {"authenticators": {"partner_key": {k: v for k, v in config.items() if v is not None}},
                                  "routes": [{"id": "orders", "match": {"paths": ["/orders/*"]},
                                              "require": "partner_key"}]})
        engine = engine_for(store, policy_dir)

        def decide(key, headers=(), method="GET", url=URL):
            return engine.decide(CheckRequest.from_url(method, url, [("X-API-Key", key), *headers]))

        return decide

    return make


def _refused(d, detail, asks=True):
    """A 401 for ``detail``; ``asks``: with the Accept-Signature (RFC 9421 §5.1) of the
    key the request presented, parsed back (its components: ``asked``)."""
    assert (d.allowed, d.status, d.reason) == (False, 401, Reason.CREDENTIALS_INVALID), d.detail
    assert detail in d.detail, d.detail
    assert d.challenges == ['ApiKey realm="api"']
    if not asks:
        assert d.accept_signature is None
        return
    assert asked(d, d.api_key.id, d.api_key.signing_alg)[:2] == ["@method", "@target-uri"]


def asked(d, key_id: str, alg: str) -> list[str]:
    """The components ``d``'s Accept-Signature asks ``key_id`` to sign, its parameters
    checked: one request, labelled, for the key's own alg, with created (no value, as
    §5.1 says) and no nonce (§5.1 would make its value the nonce: authz wants the
    client's own)."""
    requested = http_sf.parse(d.accept_signature.encode(), tltype="dictionary")
    assert list(requested) == ["sig1"]
    members, params = requested["sig1"]
    assert params == {"keyid": key_id, "alg": alg, "created": True}
    assert all(item_params == {} for _, item_params in members)
    return [name for name, _ in members]


@pytest.mark.parametrize("kind", ["ed", "hmac"])
def test_a_signed_request_is_allowed(decider, keys, kind):
    key_id, key, signing = keys[kind]
    decide = decider()
    d = decide(key, sign(key_id, signing))
    assert d.allowed and d.principal.id == "partner" and d.principal.credential == key_id
    # @path and @authority instead of @target-uri (with @query when there is one); alg left out
    assert decide(key, sign(key_id, signing, components=("@method", "@path", "@authority"), alg=None)).allowed
    d = decide(key, sign(key_id, signing, components=("@method", "@path", "@authority", "@query"), alg=None,
                         url=URL + "?page=2"), url=URL + "?page=2")
    assert d.allowed
    body = [("Content-Digest", "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:")]
    assert decide(key, sign(key_id, signing, method="POST", components=("@method", "@target-uri", "content-digest"),
                            headers=body), method="POST").allowed


def _wrong(key_id, signing, case):
    """(headers, method, url, detail) of one wrong field."""
    now = int(time.time())
    other = ed25519.Ed25519PrivateKey.generate() if isinstance(signing, ed25519.Ed25519PrivateKey) \
        else request_signing.new_hmac()[1]
    digest = [("Content-Digest", "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:")]
    return {
        "method": (sign(key_id, signing, method="POST"), "GET", URL, "verification failed"),
        "uri": (sign(key_id, signing, url=URL + "?all=1"), "GET", URL, "verification failed"),
        "authority": (sign(key_id, signing, components=("@method", "@path", "@authority"),
                           url="https://evil.example.net/orders/7"), "GET", URL, "verification failed"),
        "too old": (sign(key_id, signing, created=now - 120), "GET", URL, "too old"),
        "in the future": (sign(key_id, signing, created=now + 60), "GET", URL, "in the future"),
        "no nonce": (sign(key_id, signing, nonce=None), "GET", URL, "no nonce"),
        "no created": ([("Signature-Input", f'sig1=("@method" "@target-uri");keyid="{key_id}";nonce="n"'),
                        ("Signature", "sig1=:AAAA:")], "GET", URL, "no created time"),
        "wrong keyid": (sign(key_id, signing, keyid="key_someoneelse00"), "GET", URL,
                        f'no signature with keyid "{key_id}"'),
        "wrong alg": (sign(key_id, signing, alg="rsa-pss-sha512"), "GET", URL, "is not the key's"),
        "another key": (sign(key_id, other), "GET", URL, "verification failed"),
        "tampered": ([(n, v.replace(":", ":A", 1) if n == "Signature" else v) for n, v in sign(key_id, signing)],
                     "GET", URL, "verification failed"),
        "no @method": (sign(key_id, signing, components=("@target-uri",)), "GET", URL, "does not cover @method"),
        "no @target-uri": (sign(key_id, signing, components=("@method", "@path")), "GET", URL,
                           "neither @target-uri nor @path with @authority"),
        "digest not covered": (sign(key_id, signing, method="POST", headers=digest), "POST", URL,
                               "Content-Digest the signature does not cover"),
        "digest changed": ([(n, "sha-256=:AAAA:" if n == "Content-Digest" else v) for n, v in
                            sign(key_id, signing, method="POST", headers=digest,
                                 components=("@method", "@target-uri", "content-digest"))],
                           "POST", URL, "verification failed"),
        "unknown parameter": (sign(key_id, signing, extra=';foo="bar"'), "GET", URL, "unknown signature parameter"),
        "expired": (sign(key_id, signing, extra=f";expires={now - 10}"), "GET", URL, "verification failed"),
        "not signed": ([], "GET", URL, "request is not signed"),
        "no Signature": (sign(key_id, signing)[:1], "GET", URL, "request is not signed"),
        "malformed": ([("Signature-Input", "sig1=(@method"), ("Signature", "sig1=:AAAA:")], "GET", URL, "malformed"),
    }[case]


WRONG = ["method", "uri", "authority", "too old", "in the future", "no nonce", "no created", "wrong keyid", "wrong alg",
         "another key", "tampered", "no @method", "no @target-uri", "digest not covered", "digest changed",
         "unknown parameter", "expired", "not signed", "no Signature", "malformed"]


@pytest.mark.parametrize("kind", ["ed", "hmac"])
@pytest.mark.parametrize("case", WRONG)
def test_every_wrong_field_is_refused(decider, keys, kind, case):
    key_id, key, signing = keys[kind]
    headers, method, url, detail = _wrong(key_id, signing, case)
    _refused(decider()(key, headers, method, url), detail)


def test_a_replayed_nonce_is_refused_and_a_refused_request_spends_none(decider, keys):
    key_id, key, signing = keys["ed"]
    decide = decider()
    signed = sign(key_id, signing)
    assert decide(key, signed).allowed
    _refused(decide(key, signed), "replayed")
    nonce = "reused-nonce"
    _refused(decide(key, sign(key_id, signing, nonce=nonce, method="POST")), "verification failed")
    assert decide(key, sign(key_id, signing, nonce=nonce)).allowed  # the refusal did not spend it
    _refused(decide(key, sign(key_id, signing, nonce=nonce)), "replayed")  # a new signature, the same nonce
    # the same nonce of another key is that key's own
    other_id, other_key, other_signing = keys["hmac"]
    assert decide(other_key, sign(other_id, other_signing, nonce=nonce)).allowed


def test_the_window_is_configurable(decider, keys):
    key_id, key, signing = keys["hmac"]
    decide = decider(signature_max_age=600, signature_leeway=30)
    now = int(time.time())
    assert decide(key, sign(key_id, signing, created=now - 300)).allowed
    assert decide(key, sign(key_id, signing, created=now + 20)).allowed
    _refused(decide(key, sign(key_id, signing, created=now - 700)), "too old")
    _refused(decide(key, sign(key_id, signing, created=now + 60)), "in the future")


def test_a_key_without_signing_material_is_refused_and_a_plain_leaf_ignores_signatures(decider, keys):
    plain_id, plain_key, _ = keys["plain"]
    _refused(decider()(plain_key), f"API key {plain_id} has no signing key", asks=False)  # nothing to sign with
    _, key, _ = keys["ed"]
    plain = decider(signatures=None)
    assert plain(plain_key).allowed
    assert plain(key).allowed  # a key that can sign, unsigned, where no signature is asked for
    assert plain(key, [("Signature-Input", "sig1=();keyid=\"x\""), ("Signature", "sig1=:AAAA:")]).allowed


def test_several_signatures_the_keys_own_is_chosen_and_two_are_ambiguous(decider, keys):
    key_id, key, signing = keys["ed"]
    decide = decider()
    proxy = ed25519.Ed25519PrivateKey.generate()
    mine = sign(key_id, signing, label="client")
    theirs = sign("proxy-key", proxy, label="proxy")
    joined = [("Signature-Input", f"{theirs[0][1]}, {mine[0][1]}"), ("Signature", f"{theirs[1][1]}, {mine[1][1]}")]
    assert decide(key, joined).allowed
    again = sign(key_id, signing, label="again")
    twice = [("Signature-Input", f"{mine[0][1]}, {again[0][1]}"), ("Signature", f"{mine[1][1]}, {again[1][1]}")]
    _refused(decide(key, twice), "ambiguous")
    same_label = [("Signature-Input", f"{mine[0][1]}, {mine[0][1]}"), ("Signature", mine[1][1])]
    _refused(decide(key, same_label), "malformed")


def test_sizes_are_bounded(decider, keys):
    key_id, key, signing = keys["ed"]
    decide = decider()
    many = tuple(f"x-h{i}" for i in range(message_signatures.MAX_COMPONENTS))
    headers = [(name, "v") for name in many]
    _refused(decide(key, sign(key_id, signing, components=("@method", "@target-uri", *many), headers=headers)),
             f"more than {message_signatures.MAX_COMPONENTS} components")
    _refused(decide(key, sign(key_id, signing, nonce="n" * 200)), "no nonce")
    long_input = sign(key_id, signing, extra=';tag="' + "t" * 3000 + '"')
    _refused(decide(key, long_input), "Signature-Input header longer than")
    labels = [sign("other", signing, label=f"s{i}") for i in range(message_signatures.MAX_LABELS + 1)]
    crowd = [("Signature-Input", ", ".join(s[0][1] for s in labels)), ("Signature", ", ".join(s[1][1] for s in labels))]
    _refused(decide(key, crowd), f"more than {message_signatures.MAX_LABELS} signatures")


def test_the_signature_and_the_secret_are_not_in_the_decision(decider, keys):
    key_id, key, signing = keys["hmac"]
    signed = sign(key_id, signing, method="POST")
    d = decider()(key, signed)
    assert not d.allowed
    text = json.dumps(d.to_json()) + d.detail
    assert signing not in text and signed[1][1].split("=", 1)[1] not in text and key not in text


@pytest.mark.parametrize(("config", "problem"), [
    ({"type": "api_key", "signatures": "required", "publishable": True}, "cannot sign"),
    ({"type": "api_key", "signatures": "sometimes"}, "sometimes"),
    ({"type": "api_key", "signatures": "required", "signature_max_age": 0}, "signature_max_age"),
])
def test_bad_signature_configuration_is_refused(store, policy_dir, config, problem):
    write_policy(policy_dir, {"authenticators": {"k": config}, "routes": [{"id": "r", "require": "k"}]})
    with pytest.raises(PolicyError, match=problem):
        engine_for(store, policy_dir)


def test_window_options_without_signatures_are_linted():
    from authz.authenticators.api_key import ApiKeyAuthenticator

    lints = ApiKeyAuthenticator.lint({"type": "api_key", "signature_max_age": 30})
    assert [lint.option for lint in lints] == ["signature_max_age"]
    assert ApiKeyAuthenticator.lint({"type": "api_key", "signatures": "required", "signature_max_age": 30}) == []


def test_a_dry_run_spends_no_nonce(decider, keys, store, policy_dir):
    """``authz policy explain`` with a real signature explains the allow without spending
    its nonce: the request itself is still allowed afterwards, once."""
    key_id, key, signing = keys["ed"]
    decide = decider()
    signed = sign(key_id, signing)
    headers = [f"X-API-Key: {key}", *[f"{name}: {value}" for name, value in signed]]
    for _ in range(2):
        assert explain_json(store, policy_dir, "GET", URL, headers)["decision"] == "allow"
    assert decide(key, signed).allowed
    assert not decide(key, signed).allowed


# -- the CLI ------------------------------------------------------------------------------------------


def test_keys_create_with_signing_material(tmp_path):
    db = tmp_path / "cli.db"

    def cli(*args, ok=True):
        result = CliRunner().invoke(main, ["--db", str(db), *map(str, args)])
        assert (result.exit_code == 0) == ok, result.output
        return result.output

    cli("db", "init")
    made = json.loads(cli("keys", "create", "--principal", "partner", "--signing", "hmac-sha256", "--json"))
    assert made["signing"] == "hmac-sha256" and len(base64.b64decode(made["signing_secret"])) == 32
    (tmp_path / "ed.pub").write_bytes(public_pem(CLIENT))
    text = cli("keys", "create", "--principal", "partner", "--signing-public-key", tmp_path / "ed.pub")
    key_id = re.search(r"Created (key_\w+)", text).group(1)
    assert f'with keyid "{key_id}"' in text and "signing secret" not in text
    shown = cli("keys", "show", key_id)
    assert f"signing:       ed25519 (RFC 9421, keyid {key_id})" in shown
    assert "BEGIN PUBLIC KEY" not in shown
    assert '"signing": "hmac-sha256"' in cli("keys", "list", "--json")
    assert made["signing_secret"] not in cli("keys", "show", made["id"]) + cli("keys", "list", "--json")
    (tmp_path / "ec.pub").write_bytes(public_pem(ec.generate_private_key(ec.SECP256R1())))
    (tmp_path / "ed.key").write_bytes(CLIENT.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
    before = cli("keys", "list", "--json")
    for path, message in [("ec.pub", "only Ed25519 public keys sign requests"), ("ed.key", "this is a private key")]:
        out = cli("keys", "create", "--principal", "partner", "--signing-public-key", tmp_path / path, ok=False)
        assert message in out and len(out.strip().splitlines()) == 1
    out = cli("keys", "create", "--principal", "partner", "--signing", "hmac-sha256", "--signing-public-key",
              tmp_path / "ed.pub", ok=False)
    assert "not both" in out
    assert cli("keys", "list", "--json") == before


def test_a_rotated_key_signs_with_the_same_material_under_its_new_id(decider, keys, store):
    key_id, _, signing = keys["ed"]
    _, new, secret = Admin(store).keys.rotate(key_id, 3600)
    assert decider()(secret, sign(new.id, signing)).allowed
    _refused(decider()(secret, sign(key_id, signing)), f'no signature with keyid "{new.id}"')


# -- the README's client ------------------------------------------------------------------------------


def test_the_readme_snippet_signs_requests_authz_accepts(decider, keys, store):
    """The README's Python block, run as written (its signer is the library's), with the
    Ed25519 and the HMAC key of this store: each request is allowed once, its replay refused."""
    text = (ROOT / "README.md").read_text().split("## Signed requests (RFC 9421)", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    namespace: dict = {"__name__": "snippet"}
    exec(snippet, namespace)  # noqa: S102 — our own README
    decide = decider()
    for kind in ("ed", "hmac"):
        key_id, key, signing = keys[kind]

        def signed(url, method="GET"):
            headers = namespace["signed_headers"](method, url, key, key_id, signing)  # noqa: B023
            assert headers.pop("X-API-Key") == key  # noqa: B023 — decide() sends it
            return list(headers.items())

        sent = signed(URL + "?page=2")
        assert decide(key, sent, url=URL + "?page=2").allowed
        _refused(decide(key, sent, url=URL + "?page=2"), "replayed")
        _refused(decide(key, signed(URL), "POST"), "verification failed")


# -- a real server ------------------------------------------------------------------------------------


@pytest.mark.both_stores
def test_end_to_end_allow_and_a_replay_refused_by_another_worker(gunicorn, store, policy_dir):
    write_policy(policy_dir, {
        "authenticators": {"partner_key": {"type": "api_key", "realm": "api", "signatures": "required"}},
        "routes": [{"id": "orders", "match": {"paths": ["/orders/*"]}, "require": "partner_key"}]})
    subprocess.run([str(BIN / "authz"), "--db", store.url, "db", "init"], capture_output=True, check=True,
                   timeout=30)
    record, key = Admin(store).keys.create("partner", ["orders:read"],
                                           signing=request_signing.ed25519_public(public_pem(CLIENT)))
    server = gunicorn(workers=2)
    signed = dict(sign(record.id, CLIENT))
    door = {"X-Original-Method": "GET", "X-Original-URI": "/orders/7", "X-Original-Host": HOST,
            "X-Forwarded-Proto": "https", "X-API-Key": key, **signed}
    allowed_once_then_refused_by_another_worker(server, door)
    answer = requests.get(server.url + "/auth-request", headers=door, timeout=5)
    assert answer.status_code == 401 and answer.headers["WWW-Authenticate"] == 'ApiKey realm="api"'
    fresh = {**door, **dict(sign(record.id, CLIENT))}
    answer = requests.get(server.url + "/auth-request", headers=fresh, timeout=5)
    assert answer.status_code == 200 and answer.headers["X-Auth-Client"] == "partner"
    text = logged_decisions(store, 2, "replayed", "allow")
    assert key not in text and signed["Signature"].split("=", 1)[1] not in text


# -- review R (issue 16): what a hostile reading found ------------------------------------------------


def test_a_digest_covered_by_one_member_only_does_not_cover_the_body(decider, keys):
    """``"content-digest";key="sha-256"`` covers one member of the field: an attacker
    on the way could change the body and add ``sha-512`` of his own body beside the
    signed ``sha-256``, and an upstream that checks the stronger digest would take it.
    The whole field must be covered (bare, ``;sf`` or ``;bs``)."""
    key_id, key, signing = keys["ed"]
    decide = decider()
    signed_digest = "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
    theirs = "sha-512=:" + base64.b64encode(hashlib.sha512(b"attacker's body").digest()).decode() + ":"
    params = (f'("@method" "@target-uri" "content-digest";key="sha-256");created={int(time.time())}'
              f';keyid="{key_id}";nonce="{secrets.token_urlsafe(16)}"')
    base = (f'"@method": POST\n"@target-uri": {URL}\n"content-digest";key="sha-256": '
            f':X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:\n"@signature-params": {params}')
    signature = base64.b64encode(signing.sign(base.encode())).decode()
    headers = [("Signature-Input", f"sig1={params}"), ("Signature", f"sig1=:{signature}:"),
               ("Content-Digest", f"{signed_digest}, {theirs}")]
    _refused(decide(key, headers, "POST"), "Content-Digest the signature does not cover")
    # the whole field, as a structured field, covers it
    whole = sign(key_id, signing, method="POST", components=("@method", "@target-uri", "content-digest"),
                 headers=[("Content-Digest", signed_digest)])
    whole[0] = (whole[0][0], whole[0][1].replace('"content-digest"', '"content-digest";sf'))
    fields = {"@method": "POST", "@target-uri": URL}
    params = whole[0][1].split("=", 1)[1]
    base = "\n".join(f'"{c}": {v}' for c, v in fields.items())
    base += f'\n"content-digest";sf: {signed_digest}\n"@signature-params": {params}'
    whole[1] = ("Signature", f"sig1=:{base64.b64encode(signing.sign(base.encode())).decode()}:")
    assert decide(key, whole, "POST").allowed


def test_a_query_the_signature_does_not_cover_is_refused(decider, keys):
    """Signed over ``@path`` and ``@authority`` only, a request's query was not covered:
    an attacker on the way (or holding a signed request not yet sent) could change
    ``?amount=1`` into ``?amount=1000`` or add ``&user=victim`` and the signature still
    verified. With a query, ``@query`` (or ``@target-uri``) must be covered too."""
    key_id, key, signing = keys["hmac"]
    decide = decider()
    signed = sign(key_id, signing, components=("@method", "@path", "@authority"))
    _refused(decide(key, signed, url=URL + "?amount=1000"), "query the signature does not cover")
    assert decide(key, signed).allowed  # without a query the nonce was not spent, and @path is enough
    query = sign(key_id, signing, components=("@method", "@path", "@authority", "@query"), url=URL + "?amount=1")
    _refused(decide(key, query, url=URL + "?amount=1000"), "verification failed")
    assert decide(key, query, url=URL + "?amount=1").allowed


def test_a_method_override_the_signature_does_not_cover_is_refused(decider, keys):
    """A signed ``POST`` with ``X-HTTP-Method-Override: DELETE`` added on the way: authz
    verified the signature over POST and allowed the request in both readings, and a
    framework that honours the header deleted. An override header must be covered."""
    key_id, key, signing = keys["ed"]
    decide = decider()
    override = [("X-HTTP-Method-Override", "DELETE")]
    signed = sign(key_id, signing, method="POST")
    _refused(decide(key, [*signed, *override], "POST"), "method override")
    assert decide(key, signed, "POST").allowed  # the refusal spent no nonce
    covered = sign(key_id, signing, method="POST", components=("@method", "@target-uri", "x-http-method-override"),
                   headers=override)
    assert decide(key, covered, "POST").allowed


@pytest.mark.both_stores
def test_a_signature_whose_nonce_cannot_be_recorded_is_denied(decider, keys, store):
    """The store cannot say whether the nonce was used: deny (500), never allow."""
    key_id, key, signing = keys["ed"]
    decide = decider()
    with store.database.write() as tx:  # the replay guard broken for real: every write to it fails
        tx.execute("DROP TABLE nonces")
    d = decide(key, sign(key_id, signing))
    assert (d.allowed, d.status) == (False, 500), d.detail


# -- asking for the signature (RFC 9421 §5.1 Accept-Signature) -----------------------------------------


@pytest.mark.parametrize("kind", ["ed", "hmac"])
def test_a_refused_signature_asks_for_what_this_request_must_sign(decider, keys, kind):
    """The 401 names the signature wanted, parsed back whole: the presented key's id and
    alg, ``created``, and what this very request must cover — its Content-Digest and
    method override only when it has them. The answer carries it as ``Accept-Signature``."""
    key_id, key, signing = keys[kind]
    alg = "ed25519" if kind == "ed" else "hmac-sha256"
    decide = decider()
    d = decide(key)
    _refused(d, "request is not signed")
    assert asked(d, key_id, alg) == ["@method", "@target-uri"]
    assert ("Accept-Signature", d.accept_signature) in render(d).headers
    digest = [("Content-Digest", "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:")]
    d = decide(key, sign(key_id, signing, method="POST", headers=digest), "POST")
    _refused(d, "Content-Digest the signature does not cover")
    assert asked(d, key_id, alg) == ["@method", "@target-uri", "content-digest"]
    d = decide(key, [*digest, ("X-HTTP-Method-Override", "DELETE")], "POST")
    assert asked(d, key_id, alg) == ["@method", "@target-uri", "x-http-method-override", "content-digest"]
    signed = sign(key_id, signing)
    assert decide(key, signed).allowed
    d = decide(key, signed)
    _refused(d, "replayed")
    assert asked(d, key_id, alg) == ["@method", "@target-uri"]


def test_no_accept_signature_on_an_allow_nor_for_a_refusal_of_the_key_itself(decider, keys, store, policy_dir):
    """An allow, a request without a key, an unknown key (no key id is named that the
    request did not present: which keys exist is not told), a revoked key, a key with no
    signing material, a good signature short of a scope (403): none asks for a signature."""
    key_id, key, signing = keys["ed"]
    decide = decider()
    allowed = decide(key, sign(key_id, signing))
    assert allowed.allowed and allowed.accept_signature is None
    assert not any(name == "Accept-Signature" for name, _ in render(allowed).headers)
    for presented in ("", apikeys.generate("live")):  # none; well-formed but no such key
        d = decide(presented, sign(key_id, signing))
        assert (d.status, d.accept_signature) == (401, None), d.detail
        assert not any(name == "Accept-Signature" for name, _ in render(d).headers)
    revoked, revoked_key = Admin(store).keys.create("partner", ["orders:read"],
                                                    signing=request_signing.ed25519_public(public_pem(CLIENT)))
    Admin(store).keys.revoke(revoked.id)
    d = decide(revoked_key, sign(revoked.id, CLIENT))
    assert (d.status, d.reason, d.accept_signature) == (401, Reason.CREDENTIAL_REVOKED, None), d.detail
    plain_id, plain_key, _ = keys["plain"]
    _refused(decide(plain_key, sign(plain_id, signing)), "has no signing key", asks=False)
    write_policy(policy_dir, {"authenticators": {"partner_key": {"type": "api_key", "signatures": "required"}},
                              "routes": [{"id": "orders", "match": {"paths": ["/orders/*"]},
                                          "require": {"use": "partner_key", "scopes": ["orders:write"]}}]})
    d = engine_for(store, policy_dir).decide(CheckRequest.from_url("GET", URL, [("X-API-Key", key),
                                                                                *sign(key_id, signing)]))
    assert (d.status, d.reason, d.accept_signature) == (403, Reason.INSUFFICIENT_SCOPE, None), d.detail
