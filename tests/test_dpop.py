"""DPoP (RFC 9449) on ``jwt`` leaves: proofs made here with PyJWT and real keys (EC P-256,
Ed25519), each field of the proof wrong in turn and refused with the right challenge,
the token's binding (``cnf.jkt``, RFC 7638 thumbprints checked against the RFC's own
example and against a thumbprint computed here from the key's numbers), replays refused
by the store whichever worker of a real server sees them, and an allow end to end."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import subprocess
import time

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from authz.authenticators import dpop
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
from tests.idp import AUDIENCE, ISSUER, IdentityProvider, b64, ec_key, ed_key, mint, public_jwk, public_pem, rsa_key

IDP = rsa_key()
CLIENT_EC = ec_key()
CLIENT_ED = ed_key()
OTHER = ec_key()
P384 = ec_key(ec.SECP384R1())
HOST = "api.example.com"
URL = f"https://{HOST}/orders/7"
ALGS = 'algs="ES256 ES384 ES512 EdDSA PS256 RS256"'


def jkt_of(private) -> str:
    """RFC 7638 thumbprint computed here from the key's own numbers (not from a JWK
    library): for EC, {"crv","kty","x","y"} with the coordinates as 32-byte big-endian."""
    numbers = private.public_key().public_numbers()
    members = {"crv": "P-256", "kty": "EC", "x": b64(numbers.x.to_bytes(32, "big")),
               "y": b64(numbers.y.to_bytes(32, "big"))}
    return b64(hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode()).digest())


def bound_token(private=CLIENT_EC, alg="ES256", **claims) -> str:
    """An access token from the IdP bound to the client's key (``cnf.jkt``)."""
    jwk = public_jwk(private, None, alg)
    return mint(IDP, kid=None, cnf={"jkt": dpop.thumbprint(jwk)}, **claims)


def proof(private=CLIENT_EC, alg="ES256", *, token=None, htm="GET", htu=URL, iat=None, jti=None, typ="dpop+jwt",
          jwk=None, sign_with=None, **claims) -> str:
    """A DPoP proof as a client makes it (RFC 9449 §4.2), every field overridable."""
    payload = {"jti": secrets.token_urlsafe(16) if jti is None else jti, "htm": htm, "htu": htu,
               "iat": int(time.time()) if iat is None else iat}
    if token is not None:
        payload["ath"] = b64(hashlib.sha256(token.encode()).digest())
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    header = {"typ": typ, "jwk": public_jwk(private, None, alg) if jwk is None else jwk}
    return jwt.encode(payload, sign_with if sign_with is not None else private, algorithm=alg, headers=header)


@pytest.fixture
def decider(store, policy_dir):
    """decide(token, proof, scheme, method, url) with one route whose jwt leaf has ``dpop``."""
    (policy_dir / "idp.pem").write_bytes(public_pem(IDP))

    def make(mode="required", **options):
        config = {"type": "jwt", "issuer": ISSUER, "audience": AUDIENCE, "algorithms": ["RS256"],
                  "public_key_file": "idp.pem", "realm": "api", **options}
        leaf = {"use": "user_jwt"} if mode is None else {"use": "user_jwt", "dpop": mode}
        write_policy(policy_dir, {"authenticators": {"user_jwt": config},
                                  "routes": [{"id": "orders", "match": {"paths": ["/orders/*"]}, "require": leaf}]})
        engine = engine_for(store, policy_dir)

        def decide(token=None, proof=None, scheme="DPoP", method="GET", url=URL, extra=()):
            headers = [] if token is None else [("Authorization", f"{scheme} {token}")]
            if proof is not None:
                headers.append(("DPoP", proof))
            headers += list(extra)
            return engine.decide(CheckRequest.from_url(method, url, headers))

        return decide

    return make


def test_the_rfc_7638_example_thumbprint():
    example = {"kty": "RSA", "e": "AQAB", "alg": "RS256", "kid": "2011-04-29",
               "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPeb"
                    "WKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMi"
                    "cAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3X"
                    "PksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"}
    assert dpop.thumbprint(example) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    assert dpop.thumbprint(public_jwk(CLIENT_EC, "any-kid", "ES256")) == jkt_of(CLIENT_EC)


@pytest.mark.parametrize(("client", "alg"), [(CLIENT_EC, "ES256"), (CLIENT_ED, "EdDSA")])
def test_a_bound_token_with_its_proof_is_allowed(decider, client, alg):
    decide = decider()
    token = bound_token(client, alg)
    d = decide(token, proof(client, alg, token=token))
    assert d.allowed and d.methods == ["jwt"]
    assert d.principal.id == "alice"
    assert d.principal.jkt == dpop.thumbprint(public_jwk(client, None, alg))
    assert d.principal.to_json()["jkt"] == d.principal.jkt
    if client is CLIENT_EC:
        assert d.principal.jkt == jkt_of(CLIENT_EC)


def _refused(d, error="invalid_dpop_proof", detail="", algs=ALGS, before=()):
    """A 401 whose DPoP challenge (after the ``before`` ones) tells ``error``."""
    assert (d.allowed, d.status, d.reason) == (False, 401, Reason.CREDENTIALS_INVALID)
    assert detail in d.detail
    assert d.challenges == [*before, f'DPoP realm="api", {algs}, error="{error}", error_description="{d.detail}"']


TOKEN = bound_token()


@pytest.mark.parametrize(("make", "detail"), [
    (lambda: None, "no DPoP proof"),
    (lambda: proof(token=TOKEN, htm="POST"), "another method (htm)"),
    (lambda: proof(token=TOKEN, htm="get"), "another method (htm)"),
    (lambda: proof(token=TOKEN, htu="https://api.example.com/orders/8"), "another URL (htu)"),
    (lambda: proof(token=TOKEN, htu="https://other.example.com/orders/7"), "another URL (htu)"),
    (lambda: proof(token=TOKEN, htu="http://api.example.com/orders/7"), "another URL (htu)"),
    (lambda: proof(token=TOKEN, htu="https://api.example.com:8443/orders/7"), "another URL (htu)"),
    (lambda: proof(token=TOKEN, htu="https://user@api.example.com/orders/7"), "another URL (htu)"),
    (lambda: proof(token=TOKEN, htu="https://api.example.com/orders/x/../7"), "another URL (htu)"),
    (lambda: proof(token=TOKEN, htu="/orders/7"), "another URL (htu)"),
    (lambda: proof(token=TOKEN, iat=int(time.time()) - 120), "too old"),
    (lambda: proof(token=TOKEN, iat=int(time.time()) + 120), "in the future"),
    (lambda: proof(token=TOKEN, iat="now"), "numeric iat"),
    (lambda: proof(token=TOKEN, iat=True), "numeric iat"),
    (lambda: proof(token=TOKEN, jti=""), "lacks a jti"),
    (lambda: proof(token=TOKEN, jti="x" * 300), "lacks a jti"),
    (lambda: proof(token=TOKEN, htm=None), "lacks htm"),
    (lambda: proof(), "another access token (ath)"),
    (lambda: proof(token=bound_token(scope="orders:write")), "another access token (ath)"),
    (lambda: proof(token=TOKEN, typ="JWT"), "typ must be dpop+jwt"),
    (lambda: proof(token=TOKEN, typ=None), "typ must be dpop+jwt"),
    (lambda: proof(token=TOKEN, jwk={**public_jwk(CLIENT_EC, None, "ES256"),
                                     "d": b64(CLIENT_EC.private_numbers().private_value.to_bytes(32, "big"))}),
     "private key material"),
    (lambda: proof(token=TOKEN, sign_with=OTHER), "signature verification failed"),
    (lambda: proof(token=TOKEN, jwk=public_jwk(CLIENT_ED, None, "EdDSA")), "not a usable key"),
    (lambda: proof(token=TOKEN, jwk={"kty": "oct", "k": b64(b"k" * 32)}, alg="HS256", sign_with=b"k" * 32),
     "algorithm 'HS256' is not accepted"),
    (lambda: proof(token=TOKEN, jwk={}, sign_with=CLIENT_EC), "not a public EC, OKP or RSA key"),
    (lambda: proof(token=TOKEN, alg="ES384", jwk=public_jwk(CLIENT_EC, None, "ES256"), sign_with=P384),
     "does not fit alg ES384"),
    (lambda: proof(token=TOKEN) + "," + proof(token=TOKEN), "more than one DPoP header"),
    (lambda: "x" * 9000, "longer than 8192 bytes"),
    (lambda: "not.a.jwt", "malformed DPoP proof"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_every_wrong_field_is_refused_with_the_dpop_challenge(decider, make, detail):
    decide = decider()
    made = make()
    _refused(decide(TOKEN, made), detail=detail)


def test_alg_none_and_the_proof_without_a_jwk_are_refused(decider):
    decide = decider()
    unsigned = jwt.encode({"jti": "1", "htm": "GET", "htu": URL, "iat": int(time.time())}, None, algorithm="none",
                          headers={"typ": "dpop+jwt", "jwk": public_jwk(CLIENT_EC, None, "ES256")})
    _refused(decide(TOKEN, unsigned), detail="algorithm 'none' is not accepted")
    bare = jwt.encode({"jti": "1", "htm": "GET", "htu": URL, "iat": int(time.time()), "ath": "x"}, CLIENT_EC,
                      algorithm="ES256", headers={"typ": "dpop+jwt"})
    _refused(decide(TOKEN, bare), detail="no jwk header")


def test_a_proof_of_another_key_than_the_token_names_is_invalid_token(decider):
    decide = decider()
    _refused(decide(TOKEN, proof(OTHER, token=TOKEN)), error="invalid_token", detail="cnf.jkt")


def test_a_proof_is_accepted_once(decider):
    decide = decider()
    made = proof(token=TOKEN)
    assert decide(TOKEN, made).allowed
    _refused(decide(TOKEN, made), detail="replayed")
    assert decide(TOKEN, proof(token=TOKEN)).allowed  # a fresh proof of the same key: fine


def test_a_refused_proof_does_not_spend_its_jti(decider):
    decide = decider()
    jti = secrets.token_urlsafe(8)
    _refused(decide(TOKEN, proof(token=TOKEN, jti=jti, htm="POST")), detail="htm")
    assert decide(TOKEN, proof(token=TOKEN, jti=jti)).allowed


def test_every_reading_of_a_request_uses_its_one_proof(decider):
    """HEAD is also decided as GET (frameworks answer HEAD with the GET handler): the one
    proof must serve both readings, not be refused as its own replay."""
    decide = decider()
    d = decide(TOKEN, proof(token=TOKEN, htm="HEAD"), method="HEAD")
    assert d.allowed, d.detail


@pytest.mark.parametrize(("htu", "url"), [
    ("HTTPS://API.Example.COM:443/orders/7?x=1#top", URL),
    ("https://api.example.com./orders/%37", URL),
    ("https://api.example.com:/orders/7", URL),
    ("https://api.example.com:8443/orders/7", "https://api.example.com:8443/orders/7?page=2"),
    ("http://[::1]:8080/orders/7", "http://[::1]:8080/orders/7"),
])
def test_htu_is_compared_normalised(decider, htu, url):
    decide = decider()
    assert decide(TOKEN, proof(token=TOKEN, htu=htu), url=url).allowed


def test_a_bound_token_sent_as_bearer_is_refused_even_with_a_proof(decider):
    decide = decider("allowed")
    d = decide(TOKEN, proof(token=TOKEN), scheme="Bearer")
    assert (d.allowed, d.status) == (False, 401)
    assert "DPoP-bound token sent as a bearer token" in d.detail
    assert d.challenges[0].startswith('Bearer realm="api", error="invalid_token"')
    assert d.challenges[1] == f'DPoP realm="api", {ALGS}'


def test_required_refuses_bearer_tokens_allowed_takes_both(decider):
    plain = mint(IDP, kid=None)
    decide = decider("required")
    d = decide(plain, scheme="Bearer")
    assert (d.allowed, d.status) == (False, 401) and "needs a DPoP-bound token" in d.detail
    assert d.challenges == [f'DPoP realm="api", {ALGS}, error="invalid_token", error_description=""']
    assert decide().challenges == [f'DPoP realm="api", {ALGS}']

    decide = decider("allowed")
    assert decide(plain, scheme="Bearer").allowed
    assert decide(TOKEN, proof(token=TOKEN)).allowed
    assert decide().challenges == ['Bearer realm="api"', f'DPoP realm="api", {ALGS}']
    d = decide(TOKEN, proof(token=TOKEN, htm="PUT"))
    assert d.challenges[0] == 'Bearer realm="api"'
    assert d.challenges[1].startswith(f'DPoP realm="api", {ALGS}, error="invalid_dpop_proof"')


def test_missing_scopes_on_a_required_leaf_are_a_dpop_challenge(store, policy_dir):
    (policy_dir / "idp.pem").write_bytes(public_pem(IDP))
    write_policy(policy_dir, {"authenticators": {"user_jwt": {
        "type": "jwt", "issuer": ISSUER, "audience": AUDIENCE, "algorithms": ["RS256"], "public_key_file": "idp.pem",
        "realm": "api", "dpop_algorithms": ["ES256"]}},
        "routes": [{"id": "orders", "require": {"use": "user_jwt", "dpop": "required", "scopes": ["orders:write"]}}]})
    d = engine_for(store, policy_dir).decide(CheckRequest.from_url(
        "GET", URL, [("Authorization", f"DPoP {TOKEN}"), ("DPoP", proof(token=TOKEN))]))
    assert (d.status, d.reason) == (403, Reason.INSUFFICIENT_SCOPE)
    assert d.challenges == ['DPoP realm="api", algs="ES256", error="insufficient_scope", scope="orders:write"']


def test_an_unbound_token_sent_as_dpop_is_refused(decider):
    decide = decider("allowed")
    plain = mint(IDP, kid=None)
    d = decide(plain, proof(token=plain))
    _refused(d, error="invalid_token", detail="not DPoP-bound", before=['Bearer realm="api"'])


def test_a_token_failure_under_the_dpop_scheme_is_told_in_the_dpop_challenge(decider):
    decide = decider()
    expired = bound_token(exp=int(time.time()) - 3600)
    d = decide(expired, proof(token=expired))
    assert d.reason is Reason.CREDENTIAL_EXPIRED
    assert d.challenges == [f'DPoP realm="api", {ALGS}, error="invalid_token", '
                            f'error_description="token has expired"']


def test_a_leaf_without_dpop_refuses_bound_tokens(decider):
    decide = decider(None)
    d = decide(TOKEN, proof(token=TOKEN))
    assert (d.allowed, d.status) == (False, 401) and "does not take DPoP-bound tokens" in d.detail
    assert decide(mint(IDP, kid=None), scheme="Bearer").allowed


def test_configured_algorithms_and_max_age(decider):
    decide = decider(dpop_algorithms=["EdDSA"], dpop_max_age=5)
    _refused(decide(TOKEN, proof(token=TOKEN)), detail="algorithm 'ES256' is not accepted", algs='algs="EdDSA"')
    ed_token = bound_token(CLIENT_ED, "EdDSA")
    assert decide(ed_token, proof(CLIENT_ED, "EdDSA", token=ed_token)).allowed
    _refused(decide(ed_token, proof(CLIENT_ED, "EdDSA", token=ed_token, iat=int(time.time()) - 10)),
             detail="too old", algs='algs="EdDSA"')


@pytest.mark.parametrize(("policy", "message"), [
    ({"authenticators": {"k": {"type": "api_key"}},
      "routes": [{"id": "r", "require": {"use": "k", "dpop": "required"}}]},
     "dpop goes on a jwt or oauth2_introspection leaf"),
    ({"authenticators": {"j": {"type": "jwt", "issuer": "i", "audience": "a", "algorithms": ["RS256"],
                               "public_key_file": "idp.pem", "dpop_algorithms": ["HS256"]}},
      "routes": [{"id": "r", "require": "j"}]}, "HS256"),
    ({"authenticators": {"j": {"type": "jwt", "issuer": "i", "audience": "a", "algorithms": ["RS256"],
                               "public_key_file": "idp.pem"}},
      "routes": [{"id": "r", "require": {"use": "j", "dpop": "sometimes"}}]}, "sometimes"),
])
def test_bad_dpop_configuration_is_refused(store, policy_dir, policy, message):
    (policy_dir / "idp.pem").write_bytes(public_pem(IDP))
    write_policy(policy_dir, policy)
    with pytest.raises(PolicyError, match=message):
        engine_for(store, policy_dir)


def test_a_dry_run_spends_no_proof(decider, store, policy_dir):
    """``authz policy explain`` with a real proof explains the allow without spending the
    proof's jti: the request itself is still allowed afterwards, once."""
    decide = decider()
    made = proof(token=TOKEN)
    for _ in range(2):
        assert explain_json(store, policy_dir, "GET", URL, [f"Authorization: DPoP {TOKEN}", f"DPoP: {made}"]
                            )["decision"] == "allow"
    assert decide(TOKEN, made).allowed
    assert not decide(TOKEN, made).allowed


def test_the_readme_client_snippet_makes_proofs_authz_accepts(decider):
    """The README's Python block, run as written: its key, bound into a token, and its
    proofs (the query and fragment of the URL dropped from htu)."""
    text = (ROOT / "README.md").read_text().split("## DPoP: tokens bound to the client's key", 1)[1]
    namespace: dict = {}
    exec(re.search(r"```python\n(.*?)```", text, re.S).group(1), namespace)  # noqa: S102 — our own README
    token = mint(IDP, kid=None, cnf={"jkt": dpop.thumbprint(namespace["public_jwk"])})
    decide = decider()
    assert decide(token, namespace["dpop_proof"]("GET", URL + "?page=2#top", token), url=URL + "?page=2").allowed
    assert not decide(token, namespace["dpop_proof"]("GET", URL, token), method="POST").allowed


# -- oauth2_introspection leaves --------------------------------------------------------------------

def test_an_introspected_token_bound_by_cnf_jkt(store, policy_dir, monkeypatch):
    """RFC 9449 §6.2: the introspection answer carries cnf.jkt; the opaque token is then
    taken only with the DPoP scheme and a proof of that key, once."""
    idp = IdentityProvider()
    try:
        monkeypatch.setenv("AS_SECRET", idp.client_secret)
        write_policy(policy_dir, {"authenticators": {"as_token": {
            "type": "oauth2_introspection", "url": idp.url + "/introspect", "client_id": "authz",
            "client_secret_env": "AS_SECRET", "realm": "api", "dpop_algorithms": ["ES256", "EdDSA"]}},
            "routes": [{"id": "orders", "require": {"use": "as_token", "dpop": "allowed"}}]})
        engine = engine_for(store, policy_dir)
        answer = {"active": True, "sub": "alice", "scope": "orders:read", "exp": int(time.time()) + 600}
        idp.introspection["opaque-bound"] = {**answer, "cnf": {"jkt": jkt_of(CLIENT_EC)}}
        idp.introspection["opaque-plain"] = answer

        def decide(token, scheme="DPoP", made=None):
            headers = [("Authorization", f"{scheme} {token}")] + ([("DPoP", made)] if made else [])
            return engine.decide(CheckRequest.from_url("GET", URL, headers))

        made = proof(token="opaque-bound")
        d = decide("opaque-bound", made=made)
        assert d.allowed and d.principal.jkt == jkt_of(CLIENT_EC)
        _refused(decide("opaque-bound", made=made), detail="replayed", algs='algs="ES256 EdDSA"',
                 before=['Bearer realm="api"'])
        d = decide("opaque-bound", "Bearer", proof(token="opaque-bound"))
        assert not d.allowed and "DPoP-bound token sent as a bearer token" in d.detail
        _refused(decide("opaque-bound", made=proof(OTHER, token="opaque-bound")), error="invalid_token",
                 detail="cnf.jkt", algs='algs="ES256 EdDSA"', before=['Bearer realm="api"'])
        assert decide("opaque-plain", "Bearer").allowed  # "allowed": unbound bearer tokens too
        _refused(decide("opaque-plain", made=proof(token="opaque-plain")), error="invalid_token",
                 detail="not DPoP-bound", algs='algs="ES256 EdDSA"', before=['Bearer realm="api"'])
    finally:
        idp.stop()


# -- a real server ---------------------------------------------------------------------------------


@pytest.mark.both_stores
def test_end_to_end_allow_and_a_replay_refused_by_another_worker(gunicorn, store, policy_dir):
    (policy_dir / "idp.pem").write_bytes(public_pem(IDP))
    write_policy(policy_dir, {
        "authenticators": {"user_jwt": {"type": "jwt", "issuer": ISSUER, "audience": AUDIENCE,
                                        "algorithms": ["RS256"], "public_key_file": "idp.pem", "realm": "api"}},
        "routes": [{"id": "orders", "match": {"paths": ["/orders/*"]}, "identity_token": True,
                    "require": {"use": "user_jwt", "dpop": "required"}}]})
    subprocess.run([str(BIN / "authz"), "--db", store.url, "db", "init"], capture_output=True, check=True,
                   timeout=30)  # the first signing key, for X-Auth-Token
    server = gunicorn(workers=2)
    made = proof(token=TOKEN, htu="https://api.example.com/orders/7")
    door = {"X-Original-Method": "GET", "X-Original-URI": "/orders/7", "X-Original-Host": HOST,
            "X-Forwarded-Proto": "https", "Authorization": f"DPoP {TOKEN}", "DPoP": made}
    allowed_once_then_refused_by_another_worker(server, door)
    answer = requests.get(server.url + "/auth-request", headers=door, timeout=5)
    assert answer.status_code == 401
    assert 'error="invalid_dpop_proof"' in answer.headers["WWW-Authenticate"]
    assert answer.headers["WWW-Authenticate"].startswith("DPoP ")
    fresh = {**door, "DPoP": proof(token=TOKEN, htu="https://api.example.com/orders/7")}
    answer = requests.get(server.url + "/auth-request", headers=fresh, timeout=5)
    assert answer.status_code == 200 and answer.headers["X-Auth-User"] == "alice"
    assert answer.headers["X-Auth-Jkt"] == jkt_of(CLIENT_EC)
    signed = jwt.decode(answer.headers["X-Auth-Token"], options={"verify_signature": False})
    assert signed["sub"] == "alice" and signed["cnf"] == {"jkt": jkt_of(CLIENT_EC)}  # the upstream sees the key
    text = logged_decisions(store, 2, "replayed", "allow")  # both allows and the refused replay
    assert TOKEN not in text and made not in text and TOKEN.split(".")[2] not in text
