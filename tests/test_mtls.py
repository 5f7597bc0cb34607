"""mTLS: every proxy's certificate headers, verified here against the CA; principal
mapping; revocation by fingerprint, serial and CRL; RFC 8705 bound tokens.

Requests go through the nginx front door (``/auth-request``) with the headers each
proxy sends (docs/proxies.md, "Client certificates"); certificates come from a real PKI made in ``tests/pki.py``."""

import base64
import logging
import time
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from authz.admin import Admin
from authz.credentials.x509 import from_pem
from authz.decision import Reason
from authz.request import CheckRequest
from tests.conftest import add_user, engine_for, propagated, write_policy
from tests.idp import AUDIENCE, ISSUER, mint, public_pem, roca_key, rsa_key
from tests.pki import DAY, NOW, Pki, crl

pytestmark = pytest.mark.both_stores

PKI = Pki()
LEAF = PKI.leaf()
SPIFFE = "spiffe://corp/ns/payments/sa/api"
IDP_KEY = rsa_key()


@pytest.fixture
def client(store, make_client, policy_dir):
    keys = policy_dir / "keys"
    keys.mkdir()
    (keys / "mesh-ca.pem").write_bytes(PKI.root.pem)
    (keys / "idp.pem").write_bytes(public_pem(IDP_KEY))

    def make(mesh=None, routes=None, files=None, **settings):
        for filename, data in (files or {}).items():
            (keys / filename).write_bytes(data)
        mesh_config = {"type": "mtls", "ca_file": "keys/mesh-ca.pem", **(mesh or {})}
        return make_client({
            "authenticators": {
                "mesh": mesh_config,
                "user_jwt": {"type": "jwt", "issuer": ISSUER, "audience": AUDIENCE, "algorithms": ["RS256"],
                             "public_key_file": "keys/idp.pem"},
                "staff": {"type": "basic", "realm": "staff"},
            },
            "routes": routes or [
                {"id": "payments", "match": {"paths": ["/pay/**"]},
                 "require": {"use": "mesh", "principals": ["spiffe://corp/ns/payments/*"]}},
                {"id": "bound", "match": {"paths": ["/bound/**"]},
                 "require": {"all": ["mesh", {"use": "user_jwt", "bind_certificate": True}]}},
                {"id": "both", "match": {"paths": ["/both/**"]}, "require": {"all": ["mesh", "user_jwt"]}},
                {"id": "any", "match": {"paths": ["/any/**"]}, "require": "mesh"},
            ]}, **settings)

    return make


def ask(client, path="/pay/x", remote="127.0.0.1", **headers):
    """As nginx asks: its certificate header always comes with its verify header
    (SUCCESS unless the test says otherwise; ``X_SSL_Client_Verify=None`` drops it)."""
    base = {"X-Original-URI": path, "X-Original-Method": "GET"}
    if "X_SSL_Client_Cert" in headers:
        headers.setdefault("X_SSL_Client_Verify", "SUCCESS")
    base.update({k.replace("_", "-"): v for k, v in headers.items() if v is not None})
    return client.get("/auth-request", headers=base, environ_base={"REMOTE_ADDR": remote})


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def nginx_escaped(*certs) -> str:
    return quote(b"".join(c.pem for c in certs).decode(), safe="")


def xfcc(cert_pems=None, chain=None, hash_=None, extra_left=None) -> str:
    parts = ['By=spiffe://corp/ns/edge/sa/envoy']
    if hash_:
        parts.append(f"Hash={hash_}")
    if cert_pems:
        parts.append("Cert=" + quote(cert_pems, safe=""))
    if chain:
        parts.append("Chain=" + quote(chain, safe=""))
    parts.append('Subject="/O=Corp/CN=client, with comma"')
    parts.append(f"URI={SPIFFE}")
    element = ";".join(parts)
    return f"{extra_left},{element}" if extra_left else element


def b64der(*certs) -> str:
    return ",".join(base64.b64encode(c.der).decode() for c in certs)


# -- every header format ---------------------------------------------------------------
@pytest.mark.parametrize("headers", [
    pytest.param(lambda: {"X-SSL-Client-Cert": nginx_escaped(LEAF, PKI.intermediate),
                          "X-SSL-Client-Verify": "SUCCESS"}, id="nginx-escaped"),
    pytest.param(lambda: {"ssl-client-cert": nginx_escaped(LEAF, PKI.intermediate),
                          "ssl-client-verify": "SUCCESS"}, id="ingress-nginx"),
    pytest.param(lambda: {"X-SSL-Client-Cert": (LEAF.pem + PKI.intermediate.pem).decode()
                          .strip().replace("\n", "\t"), "X-SSL-Client-Verify": "SUCCESS"}, id="nginx-tab-continued"),
    pytest.param(lambda: {"X-Forwarded-Client-Cert": xfcc(LEAF.pem.decode(),
                                                          (LEAF.pem + PKI.intermediate.pem).decode())},
                 id="xfcc-cert-chain"),
    pytest.param(lambda: {"X-Forwarded-Tls-Client-Cert": b64der(LEAF, PKI.intermediate)}, id="traefik"),
    pytest.param(lambda: {"Client-Cert": f":{base64.b64encode(LEAF.der).decode()}:",
                          "Client-Cert-Chain": f":{base64.b64encode(PKI.intermediate.der).decode()}:"}, id="rfc9440"),
])
def test_each_header_format_with_an_intermediate(client, headers):
    r = ask(client(), **headers())
    assert r.status_code == 200, r.headers.get("X-Auth-Reason")
    assert r.headers["X-Auth-Service"] == SPIFFE and r.headers["X-Auth-Methods"] == "mtls"


def test_caddy_header(client):
    c = client(mesh={"cert_header": "X-Client-Cert", "cert_sources": ["api"]})
    leaf = PKI.leaf(issuer=PKI.root)  # Caddy forwards the leaf only
    r = ask(c, X_Client_Cert=base64.b64encode(leaf.der).decode())
    assert r.status_code == 200 and r.headers["X-Auth-Service"] == SPIFFE


def test_decisions_api_client_cert(client):
    r = client().post("/v1/decisions", json={"method": "GET", "url": "http://h/pay/x",
                                              "client_cert": (LEAF.pem + PKI.intermediate.pem).decode()})
    assert r.status_code == 200 and r.get_json()["principal"]["kind"] == "service"
    assert r.get_json()["identities"][0]["credential"] == LEAF.sha256


# -- refusals -----------------------------------------------------------------------------
@pytest.mark.parametrize("mesh", [{}, {"proxy_verified": "require"}])
def test_no_certificate_is_absent(client, mesh):
    r = ask(client(mesh=mesh), X_SSL_Client_Verify="NONE")
    assert (r.status_code, r.headers["X-Auth-Reason"]) == (401, "credentials_missing")


def test_no_certificate_lets_another_alternative_decide(client, store):
    add_user(store, "alice", "alice-pw")
    c = client(mesh={"proxy_verified": "require"}, routes=[
        {"id": "r", "require": {"any": ["mesh", "staff"]}}])
    r = ask(c, X_SSL_Client_Verify="NONE", Authorization=basic("alice", "alice-pw"))
    assert (r.status_code, r.headers["X-Auth-User"]) == (200, "alice")


@pytest.mark.parametrize("header", ["X-SSL-Client-Cert", "ssl-client-cert"])
@pytest.mark.parametrize("mesh", [{}, {"cert_sources": ["nginx"], "proxy_verified": "require"}])
def test_certificate_header_without_the_verify_header_is_refused(client, header, mesh):
    # A certificate is public: without the door's verify header beside it, anyone could
    # have copied a service's certificate into the header.
    r = client(mesh=mesh).get("/auth-request", headers={
        "X-Original-URI": "/pay/x", "X-Original-Method": "GET", header: nginx_escaped(LEAF, PKI.intermediate)})
    assert (r.status_code, r.headers["X-Auth-Reason"]) == (401, "credentials_invalid")


@pytest.mark.parametrize(("leaf", "detail_reason"), [
    (lambda: PKI.leaf(not_after=NOW - DAY, not_before=NOW - 10 * DAY), "credential_expired"),
    (lambda: PKI.leaf(not_before=NOW + DAY), "credentials_invalid"),
    (lambda: PKI.leaf(issuer=PKI.other_root), "credentials_invalid"),
    (lambda: PKI.leaf(eku=(ExtendedKeyUsageOID.SERVER_AUTH,)), "credentials_invalid"),
    (lambda: PKI.leaf(san=False), "credentials_invalid"),
])
def test_untrusted_certificates(client, leaf, detail_reason):
    cert = leaf()
    r = ask(client(), X_SSL_Client_Cert=nginx_escaped(cert, PKI.intermediate))
    assert (r.status_code, r.headers["X-Auth-Reason"]) == (401, detail_reason)


def test_missing_san_allowed_with_subject_cn(client):
    cert = PKI.leaf(san=False)
    r = ask(client(mesh={"allow_missing_san": True, "principal_from": "subject_cn"}, routes=[
        {"id": "r", "require": "mesh"}]), X_SSL_Client_Cert=nginx_escaped(cert, PKI.intermediate))
    assert r.status_code == 200 and r.headers["X-Auth-Service"] == "client"


def test_forged_xfcc_from_untrusted_peer(client):
    r = ask(client(), remote="198.51.100.9", X_Forwarded_Client_Cert=xfcc(LEAF.pem.decode()))
    assert (r.status_code, r.headers["X-Auth-Reason"]) == (403, "untrusted_proxy")


def test_spoofed_left_xfcc_element_is_ignored(client):
    attacker = PKI.leaf("spiffe://corp/ns/payments/sa/admin")
    spoof = "Cert=" + quote(attacker.pem.decode(), safe="") + ';URI=spiffe://corp/ns/payments/sa/admin'
    real = xfcc(LEAF.pem.decode(), (LEAF.pem + PKI.intermediate.pem).decode(), extra_left=spoof)
    r = ask(client(), X_Forwarded_Client_Cert=real)
    assert r.status_code == 200 and r.headers["X-Auth-Service"] == SPIFFE


def test_xfcc_hash_alone_needs_registration(client, store):
    Admin(store).certificates.register("payments-api", LEAF.sha256)
    header = xfcc(hash_=LEAF.sha256)
    assert ask(client(), X_Forwarded_Client_Cert=header).status_code == 401
    c = client(mesh={"principal_from": "registered"}, routes=[{"id": "r", "require": "mesh"}])
    r = ask(c, X_Forwarded_Client_Cert=header)
    assert r.status_code == 200 and r.headers["X-Auth-Service"] == "payments-api"


def test_conflicting_headers_are_refused(client):
    other = PKI.leaf("spiffe://corp/ns/payments/sa/other")
    r = ask(client(), X_SSL_Client_Cert=nginx_escaped(LEAF, PKI.intermediate),
            X_Forwarded_Tls_Client_Cert=b64der(other, PKI.intermediate))
    assert (r.status_code, r.headers["X-Auth-Reason"]) == (401, "credentials_invalid")


def test_cert_sources_limits_what_is_believed(client):
    c = client(mesh={"cert_sources": ["nginx"]})
    r = ask(c, X_Forwarded_Tls_Client_Cert=b64der(LEAF, PKI.intermediate))
    assert r.headers["X-Auth-Reason"] == "credentials_missing"


def test_proxy_verified(client):
    c = client(mesh={"proxy_verified": "require"})
    cert = nginx_escaped(LEAF, PKI.intermediate)
    assert ask(c, X_SSL_Client_Cert=cert, X_SSL_Client_Verify="SUCCESS").status_code == 200
    r = ask(c, X_SSL_Client_Cert=cert, X_SSL_Client_Verify="FAILED:unable to verify the first certificate")
    assert r.status_code == 401
    # a certificate while nginx says none was presented: someone else set the header
    assert ask(client(), X_SSL_Client_Cert=cert, X_SSL_Client_Verify="NONE").status_code == 401


@pytest.mark.parametrize("value", ["garbage", quote("-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----")])
def test_unreadable_header_is_refused(client, value):
    r = ask(client(), X_SSL_Client_Cert=value)
    assert (r.status_code, r.headers["X-Auth-Reason"]) == (401, "credentials_invalid")


def test_principal_globs_and_mapping(client):
    other = PKI.leaf("spiffe://corp/ns/billing/sa/api")
    r = ask(client(), X_SSL_Client_Cert=nginx_escaped(other, PKI.intermediate))
    assert (r.status_code, r.headers["X-Auth-Reason"]) == (403, "principal_not_allowed")
    dns = PKI.leaf(spiffe=None, dns=["api.payments.corp"], emails=["ops@corp.example"])
    for principal_from, expected in (("san_dns", "api.payments.corp"), ("san_email", "ops@corp.example"),
                                     ("subject_cn", "client")):
        c = client(mesh={"principal_from": principal_from}, routes=[{"id": "r", "require": "mesh"}])
        assert ask(c, X_SSL_Client_Cert=nginx_escaped(dns, PKI.intermediate)).headers["X-Auth-Service"] == expected


# -- revocation --------------------------------------------------------------------------
def test_revoked_fingerprint_and_serial(client, store):
    c = client()
    a, b = PKI.leaf(), PKI.leaf()
    assert ask(c, X_SSL_Client_Cert=nginx_escaped(a, PKI.intermediate)).status_code == 200
    Admin(store).certificates.revoke_fingerprint(a.sha256.upper())
    r = propagated(lambda: ask(c, X_SSL_Client_Cert=nginx_escaped(a, PKI.intermediate)), lambda r: r.status_code != 200)
    assert (r.status_code, r.headers["X-Auth-Reason"]) == (401, "credential_revoked")
    assert ask(c, X_SSL_Client_Cert=nginx_escaped(b, PKI.intermediate)).status_code == 200
    Admin(store).certificates.revoke_serial(PKI.intermediate.cert.subject.rfc4514_string(),
                                     format(b.cert.serial_number, "X"))
    r = propagated(lambda: ask(c, X_SSL_Client_Cert=nginx_escaped(b, PKI.intermediate)), lambda r: r.status_code != 200)
    assert r.headers["X-Auth-Reason"] == "credential_revoked"


def test_crl(client):
    revoked, good = PKI.leaf(), PKI.leaf()
    c = client(mesh={"crl_files": ["keys/issuing.crl"]},
               files={"issuing.crl": crl(PKI.intermediate, [revoked])})
    assert ask(c, X_SSL_Client_Cert=nginx_escaped(good, PKI.intermediate)).status_code == 200
    r = ask(c, X_SSL_Client_Cert=nginx_escaped(revoked, PKI.intermediate))
    assert (r.status_code, r.headers["X-Auth-Reason"]) == (401, "credential_revoked")


def test_a_reissued_crl_revokes_a_cached_chain_on_the_next_policy_load(store, policy_dir):
    """Caches outlive policy revisions; a CRL re-issued under the same file name must
    not leave a chain verified against the old one in the cache."""
    from authz.authenticators import Context
    from authz.engine import DecisionEngine
    from authz.policy import load_policy

    leaf = PKI.leaf()
    (policy_dir / "keys").mkdir()
    (policy_dir / "keys" / "ca.pem").write_bytes(PKI.root.pem)
    (policy_dir / "keys" / "issuing.crl").write_bytes(crl(PKI.intermediate, [], number=1))
    write_policy(policy_dir, {"authenticators": {"mesh": {"type": "mtls", "ca_file": "keys/ca.pem",
                                                          "crl_files": ["keys/issuing.crl"]}},
                              "routes": [{"id": "r", "require": "mesh"}]})
    context = Context(store=store)  # one per worker, shared by every revision
    request = CheckRequest.build("GET", "/x", "svc", client_certs=(
        from_pem("api", (leaf.pem + PKI.intermediate.pem).decode()),))
    assert DecisionEngine(load_policy(policy_dir, context)).decide(request).allowed
    (policy_dir / "keys" / "issuing.crl").write_bytes(crl(PKI.intermediate, [leaf], number=2))
    decision = DecisionEngine(load_policy(policy_dir, context)).decide(request)
    assert (decision.status, decision.reason) == (401, Reason.CREDENTIAL_REVOKED)


def test_stale_crl_denies(client):
    c = client(mesh={"crl_files": ["keys/stale.crl"]},
               files={"stale.crl": crl(PKI.intermediate, [], last_update=NOW - 9 * DAY, next_update=NOW - DAY)})
    r = ask(c, X_SSL_Client_Cert=nginx_escaped(LEAF, PKI.intermediate))
    assert r.status_code == 401


def test_crl_signed_by_someone_else_denies(client):
    forged = crl(PKI.other_root, [])
    forged = forged  # issuer name differs: not applicable to this chain; now a same-name forgery:
    from tests.pki import issue

    impostor = issue("Mesh Issuing CA", ca=True)  # same subject, different key
    c = client(mesh={"crl_files": ["keys/forged.crl"]}, files={"forged.crl": crl(impostor, [])})
    assert ask(c, X_SSL_Client_Cert=nginx_escaped(LEAF, PKI.intermediate)).status_code == 401


_IDP = x509.IssuingDistributionPoint(full_name=None, relative_name=None, only_contains_user_certs=True,
                                     only_contains_ca_certs=False, only_some_reasons=None, indirect_crl=False,
                                     only_contains_attribute_certs=False)


@pytest.mark.parametrize(("options", "rule"), [
    ({"number": None}, "CRLNumber is missing (RFC 5280 §5.2.3)"),
    ({"extensions": [(x509.DeltaCRLIndicator(1), True)]}, "delta CRLs are not supported (RFC 5280 §5.2.4)"),
    ({"extensions": [(_IDP, True)]}, "issuingDistributionPoint are not supported (RFC 5280 §5.2.5)"),
    ({"extensions": [(x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00"),
                      True)]}, "unknown critical extension 1.3.6.1.4.1.55555.1 (RFC 5280 §5.2)"),
    ({"last_update": NOW + DAY}, "thisUpdate is in the future (RFC 5280 §5.1.2.4)"),
])
def test_an_unusable_crl_denies_everything_it_covers_with_one_log_line(client, caplog, options, rule):
    """Fail closed (RFC 5280 §6.3.3): not one request of the CRL's issuer passes, and the
    operator reads one line naming the file and the rule, not one per request."""
    c = client(mesh={"crl_files": ["keys/broken.crl"]},
               files={"broken.crl": crl(PKI.intermediate, [], **options)})
    with caplog.at_level(logging.WARNING, logger="authz.mtls"):
        for leaf in (LEAF, PKI.leaf(), LEAF):
            r = ask(c, X_SSL_Client_Cert=nginx_escaped(leaf, PKI.intermediate))
            assert (r.status_code, r.headers["X-Auth-Reason"]) == (401, "credentials_invalid")
    lines = [r.getMessage() for r in caplog.records if "keys/broken.crl" in r.getMessage()]
    assert len(lines) == 1 and rule in lines[0], lines
    # A chain of another issuer is not covered by that CRL.
    other = PKI.leaf(issuer=PKI.root)
    assert ask(c, X_SSL_Client_Cert=nginx_escaped(other)).status_code == 200


def test_a_crl_from_the_future_denies_until_its_thisupdate_then_serves(client, caplog, monkeypatch):
    from authz.authenticators import mtls

    revoked = PKI.leaf()
    c = client(mesh={"crl_files": ["keys/early.crl"]},
               files={"early.crl": crl(PKI.intermediate, [revoked], last_update=NOW + DAY)})
    with caplog.at_level(logging.WARNING, logger="authz.mtls"):
        assert ask(c, X_SSL_Client_Cert=nginx_escaped(LEAF, PKI.intermediate)).status_code == 401
        monkeypatch.setattr(mtls, "clock", lambda: (NOW + 2 * DAY).timestamp())
        assert ask(c, X_SSL_Client_Cert=nginx_escaped(LEAF, PKI.intermediate)).status_code == 200
        r = ask(c, X_SSL_Client_Cert=nginx_escaped(revoked, PKI.intermediate))
        assert (r.status_code, r.headers["X-Auth-Reason"]) == (401, "credential_revoked")
    assert [m for m in caplog.messages if "keys/early.crl" in m and "thisUpdate is in the future" in m]


def test_crl_signer_without_crlsign_is_refused_and_root_without_keyusage_is_an_anchor(store, make_client, policy_dir,
                                                                                      caplog):
    """RFC 5280 §4.2.1.3: a CA whose keyUsage lacks cRLSign cannot sign CRLs; §6.1: a root
    without keyUsage is still a trust anchor (its CRL is then acceptable, §6.3.3(f))."""
    from tests.pki import issue

    keys = policy_dir / "keys"
    keys.mkdir()
    bare_root = issue("Bare Root", ca=True)
    bare_root = _without_key_usage(bare_root)
    no_crlsign = _with_key_usage(issue("Signing Only", ca=True), crl_sign=False)
    for label, root in (("bare", bare_root), ("nosign", no_crlsign)):
        (keys / f"{label}.pem").write_bytes(root.pem)
        (keys / f"{label}.crl").write_bytes(crl(root, []))
    c = make_client({"authenticators": {
        "bare": {"type": "mtls", "ca_file": "keys/bare.pem", "crl_files": ["keys/bare.crl"]},
        "nosign": {"type": "mtls", "ca_file": "keys/nosign.pem", "crl_files": ["keys/nosign.crl"]}},
        "routes": [{"id": "bare", "match": {"paths": ["/bare"]}, "require": "bare"},
                   {"id": "nosign", "match": {"paths": ["/nosign"]}, "require": "nosign"}]})
    assert ask(c, "/bare", X_SSL_Client_Cert=nginx_escaped(PKI.leaf(issuer=bare_root))).status_code == 200
    with caplog.at_level(logging.WARNING, logger="authz.mtls"):
        r = ask(c, "/nosign", X_SSL_Client_Cert=nginx_escaped(PKI.leaf(issuer=no_crlsign)))
    assert (r.status_code, r.headers["X-Auth-Reason"]) == (401, "credentials_invalid")
    assert any("keys/nosign.crl is unusable" in m and "lacks cRLSign" in m for m in caplog.messages)


def _without_key_usage(issued):
    return _resign(issued, lambda b, ext: b if isinstance(ext.value, x509.KeyUsage) else
                   b.add_extension(ext.value, ext.critical))


def _with_key_usage(issued, crl_sign: bool):
    usage = x509.KeyUsage(False, False, False, False, False, True, crl_sign, False, False)
    return _resign(issued, lambda b, ext: b.add_extension(usage if isinstance(ext.value, x509.KeyUsage) else ext.value,
                                                           ext.critical))


def _resign(issued, each):
    from cryptography.hazmat.primitives import hashes

    from tests.pki import Issued

    cert = issued.cert
    builder = (x509.CertificateBuilder().subject_name(cert.subject).issuer_name(cert.issuer)
               .public_key(issued.key.public_key()).serial_number(cert.serial_number)
               .not_valid_before(cert.not_valid_before_utc).not_valid_after(cert.not_valid_after_utc))
    for ext in cert.extensions:
        builder = each(builder, ext)
    return Issued(builder.sign(issued.key, hashes.SHA256()), issued.key)


@pytest.mark.parametrize(("where", "key", "problem"), [
    ("client", lambda: rsa_key(1024), "client certificate key refused: RSA key of 1024 bits"),
    ("client", roca_key, "client certificate key refused: RSA key has the ROCA fingerprint"),
    ("intermediate", lambda: rsa_key(2052), "intermediate certificate key refused: RSA modulus of 2052 bits"),
    ("root", lambda: rsa_key(2056 - 4), "root certificate key refused: RSA modulus of 2052 bits"),
    ("root", roca_key, "root certificate key refused: RSA key has the ROCA fingerprint"),
])
def test_weak_keys_anywhere_in_the_chain_are_refused(store, make_client, policy_dir, where, key, problem):
    from tests.pki import issue

    root = issue("Weak Test Root", ca=True, key=key() if where == "root" else None)
    ica = issue("Weak Test ICA", root, ca=True, key=key() if where == "intermediate" else None)
    leaf = issue("client", ica, uris=[SPIFFE], key=key() if where == "client" else None)
    (policy_dir / "keys").mkdir()
    (policy_dir / "keys" / "root.pem").write_bytes(root.pem)
    write_policy(policy_dir, {"authenticators": {"mesh": {"type": "mtls", "ca_file": "keys/root.pem"}},
                              "routes": [{"id": "r", "require": "mesh"}]})
    chain = from_pem("api", (leaf.pem + ica.pem).decode())
    decision = engine_for(store, policy_dir).decide(CheckRequest.build("GET", "/x", "svc", client_certs=(chain,)))
    assert (decision.status, decision.reason) == (401, Reason.CREDENTIALS_INVALID)
    assert problem in decision.detail


def _long_chain(length: int):
    """Root → (length - 2) intermediates → leaf."""
    from tests.pki import issue

    chain = [issue("Long Root", ca=True)]
    for index in range(length - 2):
        chain.append(issue(f"Long ICA {index}", chain[-1], ca=True))
    chain.append(issue("client", chain[-1], uris=[SPIFFE]))
    return chain


@pytest.mark.parametrize(("length", "setting", "status"), [(10, None, 200), (16, None, 200), (17, None, 401),
                                                            (10, 8, 401)])
def test_chain_length_is_a_setting(store, make_client, policy_dir, length, setting, status):
    chain = _long_chain(length)
    (policy_dir / "keys").mkdir()
    (policy_dir / "keys" / "root.pem").write_bytes(chain[0].pem)
    c = make_client({"authenticators": {"mesh": {"type": "mtls", "ca_file": "keys/root.pem"}},
                     "routes": [{"id": "r", "require": "mesh"}]},
                    **({"max_chain_length": setting} if setting else {}))
    forwarded = b"".join(c.pem for c in reversed(chain[1:]))  # leaf first, root left out
    r = c.post("/v1/decisions", json={"method": "GET", "host": "svc", "path": "/x", "client_cert": forwarded.decode()})
    assert r.status_code == status, r.get_json()


def test_chain_length_setting_is_bounded():
    from authz.config import Settings, SettingsError

    assert Settings.from_env({}).max_chain_length == 16
    assert Settings.from_env({"AUTHZ_MAX_CHAIN_LENGTH": "24"}).max_chain_length == 24
    for bad in ("1", "65", "many"):
        with pytest.raises(SettingsError, match="AUTHZ_MAX_CHAIN_LENGTH"):
            Settings.from_env({"AUTHZ_MAX_CHAIN_LENGTH": bad})


# -- certificate-bound tokens (RFC 8705) ----------------------------------------------------
def x5t(issued) -> str:
    from authz.credentials.x509 import thumbprint

    return thumbprint(issued.der)


def test_bound_token_with_its_certificate(client):
    token = mint(IDP_KEY, kid=None, cnf={"x5t#S256": x5t(LEAF)})
    r = ask(client(), "/bound/x", X_SSL_Client_Cert=nginx_escaped(LEAF, PKI.intermediate),
            Authorization=f"Bearer {token}")
    assert r.status_code == 200
    assert (r.headers["X-Auth-User"], r.headers["X-Auth-Service"]) == ("alice", SPIFFE)
    assert r.headers["X-Auth-Methods"] == "mtls,jwt"


def test_bound_token_with_the_wrong_certificate(client):
    other = PKI.leaf()
    token = mint(IDP_KEY, kid=None, cnf={"x5t#S256": x5t(LEAF)})
    for path in ("/bound/x", "/both/x"):
        r = ask(client(), path, X_SSL_Client_Cert=nginx_escaped(other, PKI.intermediate),
                Authorization=f"Bearer {token}")
        assert (r.status_code, r.headers["X-Auth-Reason"]) == (401, "credentials_invalid")


def test_unbound_token_where_binding_is_required(client):
    token = mint(IDP_KEY, kid=None)
    r = ask(client(), "/bound/x", X_SSL_Client_Cert=nginx_escaped(LEAF, PKI.intermediate),
            Authorization=f"Bearer {token}")
    assert (r.status_code, r.headers["X-Auth-Reason"]) == (401, "credentials_invalid")
    r = ask(client(), "/both/x", X_SSL_Client_Cert=nginx_escaped(LEAF, PKI.intermediate),
            Authorization=f"Bearer {token}")
    assert r.status_code == 200


def test_bind_certificate_placement_is_checked(client):
    from authz.policy import PolicyError

    with pytest.raises(PolicyError, match="bind_certificate goes on a jwt leaf"):
        client(routes=[{"id": "r", "require": {"any": ["mesh", {"use": "user_jwt", "bind_certificate": True}]}}])
    with pytest.raises(PolicyError, match="bind_certificate goes on a jwt leaf"):
        client(routes=[{"id": "r", "require": {"use": "user_jwt", "bind_certificate": True}}])


def test_verified_chain_is_cached_but_revocation_is_not(client, store, monkeypatch):
    from cryptography.x509.verification import ClientVerifier  # noqa: F401

    from authz.authenticators import mtls

    calls = []
    real = mtls.MtlsAuthenticator._verify
    monkeypatch.setattr(mtls.MtlsAuthenticator, "_verify", lambda self, chain: calls.append(1) or real(self, chain))
    c = client()
    cert = PKI.leaf()
    for _ in range(3):
        assert ask(c, X_SSL_Client_Cert=nginx_escaped(cert, PKI.intermediate)).status_code == 200
    assert len(calls) == 1
    Admin(store).certificates.revoke_fingerprint(cert.sha256)
    header = nginx_escaped(cert, PKI.intermediate)
    assert propagated(lambda: ask(c, X_SSL_Client_Cert=header), lambda r: r.status_code != 200).status_code == 401


def test_cached_certificate_still_expires(client):
    cert = PKI.leaf(not_after=NOW.replace(microsecond=0) + (time.time() - NOW.timestamp() + 2) * DAY / 86400)
    c = client()
    assert ask(c, X_SSL_Client_Cert=nginx_escaped(cert, PKI.intermediate)).status_code == 200
    # notAfter is inclusive (RFC 5280 §4.1.2.5): good through its whole second, not after.
    time.sleep(max(cert.cert.not_valid_after_utc.timestamp() + 1.05 - time.time(), 0))
    r = ask(c, X_SSL_Client_Cert=nginx_escaped(cert, PKI.intermediate))
    assert (r.status_code, r.headers["X-Auth-Reason"]) == (401, "credential_expired")
