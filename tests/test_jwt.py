"""The ``jwt`` authenticator against a real JWKS endpoint on loopback: every outcome,
the attacks of RFC 8725 and the JWT literature refused, RFC 6750 challenges, JWKS
caching, rotation and outage, the verification cache and jti revocation."""

import json
import logging
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from authz.admin.revocations import revoke
from authz.decision import Reason
from authz.policy import PolicyError
from authz.request import CheckRequest
from tests.conftest import engine_for, write_policy
from tests.idp import (
    AUDIENCE,
    ISSUER,
    IdentityProvider,
    b64,
    ec_key,
    ed_key,
    mint,
    public_jwk,
    public_pem,
    roca_key,
    rsa_key,
)

RSA = rsa_key()
ROCA = roca_key()
ODD_SIZE = rsa_key(2052)
RSA_NEW = rsa_key()
EC = ec_key()
ATTACKER = rsa_key()


@pytest.fixture
def idp():
    provider = IdentityProvider()
    provider.jwks = {"keys": [public_jwk(RSA, "k1", "RS256"), public_jwk(EC, "e1", "ES256")]}
    yield provider
    provider.stop()


@pytest.fixture
def decider(store, policy_dir, idp):
    """decide(token, **authenticator options) with one route requiring `idp_jwt`."""

    def make(require="idp_jwt", **options):
        config = {"type": "jwt", "issuer": ISSUER, "audience": AUDIENCE, "algorithms": ["RS256", "ES256"],
                  "jwks_uri": idp.url + "/jwks", "realm": "api"}
        config.update(options)
        config = {k: v for k, v in config.items() if v is not None}
        write_policy(policy_dir, {"authenticators": {"idp_jwt": config, "key": {"type": "api_key"}},
                                  "routes": [{"id": "r", "require": require}]})
        engine = engine_for(store, policy_dir)

        def decide(token=None, authorization=None):
            headers = {}
            if token is not None:
                headers["Authorization"] = f"Bearer {token}"
            if authorization is not None:
                headers["Authorization"] = authorization
            return engine.decide(CheckRequest.build("GET", "/x", "api.example.com", headers=headers))

        decide.engine = engine
        return decide

    return make


def test_valid_rs256_and_es256(decider):
    decide = decider()
    d = decide(mint(RSA, scope="orders:read orders:write"))
    assert d.allowed and d.methods == ["jwt"]
    assert (d.principal.id, d.principal.kind) == ("alice", "user")
    assert d.principal.scopes == {"orders:read", "orders:write"}
    assert decide(mint(EC, "ES256", kid="e1")).allowed


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_time_that_is_no_json_number_is_malformed(decider, claim, value):
    """``NaN`` compares false with every bound: an ``exp`` of NaN never expired. RFC 8259
    has no NaN nor Infinity; a token (signed by the IdP itself) carrying one is refused."""
    d = decider()(mint(RSA, **{claim: value}))
    assert (d.allowed, d.status, d.reason, d.detail) == (False, 401, Reason.CREDENTIALS_INVALID, "malformed JWT")


def test_scp_array_and_custom_claims(decider):
    decide = decider(scopes_claim=None, roles_claim="realm_access.roles", principal_claim="email")
    d = decide(mint(RSA, scope=None, scp=["a", "b"], email="alice@example.com",
                    realm_access={"roles": ["admin"]}))
    assert d.allowed and d.principal.id == "alice@example.com"
    assert d.principal.scopes == {"a", "b"} and d.principal.roles == {"admin"}


def test_rfc9068_access_token_layers(decider):
    decide = decider(typ="at+jwt")
    user_token = mint(RSA, headers={"typ": "at+jwt"}, client_id="mobile-app")
    d = decide(user_token)
    assert d.allowed and d.principal.id == "alice"
    assert [(i.id, str(i.kind)) for i in d.identities] == [("alice", "user"), ("mobile-app", "client")]
    machine = mint(RSA, headers={"typ": "application/at+jwt"}, sub="billing-svc", client_id="billing-svc")
    d = decide(machine)
    assert [(i.id, str(i.kind)) for i in d.identities] == [("billing-svc", "client")]
    d = decide(mint(RSA, headers={"typ": "JWT"}))
    assert (d.status, d.reason, d.detail) == (401, Reason.CREDENTIALS_INVALID, "token typ must be at+jwt")


def test_other_keys_sources(store, policy_dir, monkeypatch):
    (policy_dir / "keys").mkdir()
    (policy_dir / "keys" / "idp.jwks.json").write_text(json.dumps({"keys": [public_jwk(EC, "e1", "ES256")]}))
    (policy_dir / "keys" / "idp.pem").write_bytes(public_pem(RSA))
    monkeypatch.setenv("JWT_SECRET", "x" * 32)
    ed = ed_key()
    (policy_dir / "keys" / "ed.pem").write_bytes(public_pem(ed))
    base = {"type": "jwt", "issuer": ISSUER, "audience": [AUDIENCE, "other"]}
    write_policy(policy_dir, {"authenticators": {
        "from_file": {**base, "algorithms": ["ES256"], "jwks_file": "keys/idp.jwks.json"},
        "from_pem": {**base, "algorithms": ["RS256"], "public_key_file": "keys/idp.pem"},
        "from_ed": {**base, "algorithms": ["EdDSA"], "public_key_file": "keys/ed.pem"},
        "from_secret": {**base, "algorithms": ["HS256"], "secret_env": "JWT_SECRET"},
    }, "routes": [{"id": r, "match": {"paths": [f"/{r}"]}, "require": r}
                  for r in ("from_file", "from_pem", "from_ed", "from_secret")]})
    engine = engine_for(store, policy_dir)

    def decide(path, token):
        return engine.decide(CheckRequest.build("GET", path, headers={"Authorization": f"Bearer {token}"}))

    assert decide("/from_file", mint(EC, "ES256", kid="e1")).allowed
    assert decide("/from_pem", mint(RSA, kid=None)).allowed
    assert decide("/from_ed", mint(ed, "EdDSA", kid=None)).allowed
    assert decide("/from_secret", mint("x" * 32, "HS256", kid=None)).allowed
    assert not decide("/from_secret", mint("y" * 32, "HS256", kid=None)).allowed


def alg_none(alg: str) -> str:
    now = int(time.time())
    return f"{b64({'alg': alg, 'kid': 'k1'})}.{b64({'iss': ISSUER, 'aud': AUDIENCE, 'sub': 'root', 'exp': now + 300})}."


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_is_refused(decider, alg):
    d = decider()(alg_none(alg))
    assert (d.status, d.reason) == (401, Reason.CREDENTIALS_INVALID)
    assert "algorithm" in d.detail


def test_hs256_signed_with_the_rsa_public_key_is_refused(decider):
    pem = public_pem(RSA)
    now = int(time.time())
    head = b64({"alg": "HS256", "kid": "k1"})
    body = b64({"iss": ISSUER, "aud": AUDIENCE, "sub": "root", "exp": now + 60})
    import hashlib
    import hmac

    sig = b64(hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest())
    d = decider()(f"{head}.{body}.{sig}")
    assert (d.status, d.reason) == (401, Reason.CREDENTIALS_INVALID)
    # …and even where HS256 is configured, a PEM never becomes an HMAC secret here:
    assert "algorithm" in d.detail


@pytest.mark.parametrize("kid", ["../../../../etc/passwd", "' OR '1'='1' --", "k1' UNION SELECT 1 --",
                                 "unknown-kid", "x" * 300])
def test_forged_kids_are_refused(decider, idp, kid):
    decide = decider()
    d = decide(mint(ATTACKER, kid=kid))
    assert (d.status, d.reason) == (401, Reason.CREDENTIALS_INVALID)


def test_unknown_kids_refetch_at_most_once_per_interval(decider, idp):
    decide = decider(refetch_interval=3600)
    assert decide(mint(RSA)).allowed
    before = idp.hits["/jwks"]
    for i in range(50):
        assert not decide(mint(ATTACKER, kid=f"forged-{i}")).allowed
    assert idp.hits["/jwks"] - before <= 1


@pytest.mark.parametrize("header", ["jku", "x5u", "jwk", "x5c"])
def test_keys_named_by_the_token_are_never_fetched_or_used(decider, idp, header):
    attacker_jwks_url = idp.url + "/attacker-jwks"
    values = {"jku": attacker_jwks_url, "x5u": idp.url + "/attacker-cert",
              "jwk": public_jwk(ATTACKER, "k1", "RS256"), "x5c": ["MIIBdummy"]}
    token = mint(ATTACKER, kid="k1", headers={header: values[header]})
    d = decider()(token)
    assert (d.status, d.reason) == (401, Reason.CREDENTIALS_INVALID)
    assert "/attacker-jwks" not in idp.hits and "/attacker-cert" not in idp.hits


@pytest.mark.parametrize(("claims", "reason", "detail"), [
    ({"exp": int(time.time()) - 120}, Reason.CREDENTIAL_EXPIRED, "token has expired"),
    ({"nbf": int(time.time()) + 3600}, Reason.CREDENTIALS_INVALID, "token is not valid yet"),
    ({"iat": int(time.time()) + 3600}, Reason.CREDENTIALS_INVALID, "token is not valid yet"),
    ({"aud": "https://other.example.com"}, Reason.CREDENTIALS_INVALID, "token audience is not accepted here"),
    ({"aud": None}, Reason.CREDENTIALS_INVALID, "token lacks the aud claim"),
    ({"exp": None}, Reason.CREDENTIALS_INVALID, "token lacks the exp claim"),
    ({"sub": None}, Reason.CREDENTIALS_INVALID, "token has no sub claim"),
])
def test_claim_checks(decider, claims, reason, detail):
    d = decider()(mint(RSA, **claims))
    assert (d.status, d.reason, d.detail) == (401, reason, detail)


def test_leeway(decider):
    token = mint(RSA, exp=int(time.time()) - 10)
    assert decider(leeway=30)(token).allowed
    assert decider(leeway=0)(token).reason == Reason.CREDENTIAL_EXPIRED


def test_required_claims(decider):
    decide = decider(required_claims=["tenant"])
    assert decide(mint(RSA, tenant="t1")).allowed
    assert decide(mint(RSA)).detail == "token lacks the tenant claim"


def test_wrong_issuer_is_not_ours(decider):
    decide = decider()
    d = decide(mint(RSA, iss="https://evil.example.com"))
    # absent for this authenticator; the Authorization header nobody owned makes it invalid
    assert (d.status, d.reason) == (401, Reason.CREDENTIALS_INVALID)
    assert "not accepted" in d.detail


def test_two_issuers_side_by_side(store, policy_dir, idp):
    other = rsa_key()
    (policy_dir / "keys").mkdir()
    (policy_dir / "keys" / "other.pem").write_bytes(public_pem(other))
    write_policy(policy_dir, {"authenticators": {
        "first": {"type": "jwt", "issuer": ISSUER, "audience": AUDIENCE, "algorithms": ["RS256"],
                  "jwks_uri": idp.url + "/jwks"},
        "second": {"type": "jwt", "issuer": "https://second.example.com", "audience": AUDIENCE,
                   "algorithms": ["RS256"], "public_key_file": "keys/other.pem"},
    }, "routes": [{"id": "r", "require": {"any": ["first", "second"]}}]})
    engine = engine_for(store, policy_dir)

    def decide(token):
        return engine.decide(CheckRequest.build("GET", "/", headers={"Authorization": f"Bearer {token}"}))

    d = decide(mint(other, iss="https://second.example.com", sub="bob", kid=None))
    assert d.allowed and d.principal.id == "bob" and d.principal.authenticator == "second"
    assert decide(mint(RSA)).principal.authenticator == "first"


@pytest.mark.parametrize("mangle", [
    lambda t: t[: len(t) // 2],                                   # truncated
    lambda t: t.rsplit(".", 1)[0] + ".",                           # signature stripped
    lambda t: t.split(".")[0] + ".!!!." + t.split(".")[2],         # garbage payload
    lambda t: t + "A" * 9000,                                      # oversized
    lambda t: "e30." + t.split(".", 1)[1],                         # header {} (no alg)
])
def test_malformed_tokens(decider, mangle):
    d = decider()(mangle(mint(RSA)))
    assert (d.status, d.reason) == (401, Reason.CREDENTIALS_INVALID)


def test_ecdsa_signature_with_r_and_s_zero(decider):
    token = mint(EC, "ES256", kid="e1")
    head, body, _ = token.split(".")
    zero = b64(b"\x00" * 64)  # JOSE ECDSA signature: r || s, 32 bytes each
    d = decider()(f"{head}.{body}.{zero}")
    assert (d.status, d.reason, d.detail) == (401, Reason.CREDENTIALS_INVALID, "signature verification failed")


def test_not_a_jwt_is_absent(decider):
    d = decider(require={"any": ["idp_jwt", "key"]})(authorization="Bearer opaque-token-value")
    assert (d.status, d.reason) == (401, Reason.CREDENTIALS_INVALID)  # unclaimed bearer
    d = decider(require={"any": ["idp_jwt", "key"]})()
    assert (d.status, d.reason) == (401, Reason.CREDENTIALS_MISSING)


def test_challenges(decider):
    decide = decider(require={"use": "idp_jwt", "scopes": ["orders:write"]})
    assert decide().challenges == ['Bearer realm="api"']
    d = decide(mint(RSA, exp=int(time.time()) - 3600))
    assert d.challenges == ['Bearer realm="api", error="invalid_token", error_description="token has expired"']
    d = decide(mint(RSA, scope="orders:read"))
    assert (d.status, d.reason) == (403, Reason.INSUFFICIENT_SCOPE)
    assert d.challenges == ['Bearer realm="api", error="insufficient_scope", scope="orders:write"']


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_unfit_jwks_keys_are_ignored_with_a_warning(decider, idp, caplog):
    weak = rsa_key(1024)
    p384 = ec_key(ec.SECP384R1())
    idp.jwks = {"keys": [
        public_jwk(RSA, "enc", "RS256", use="enc"),
        public_jwk(weak, "weak", "RS256"),
        public_jwk(p384, "curve", "ES256") | {"crv": "P-384"},
        public_jwk(RSA, "alg", "RS512"),
        public_jwk(ROCA, "roca", "RS256"),
        public_jwk(ODD_SIZE, "odd", "RS256"),
        public_jwk(RSA, "k1", "RS256"),
    ]}
    decide = decider()
    with caplog.at_level(logging.WARNING, logger="authz.jwks"):
        assert decide(mint(RSA, kid="k1")).allowed
    assert any("key roca ignored: RSA key has the ROCA fingerprint" in r.getMessage() for r in caplog.records)
    assert any("key odd ignored: RSA modulus of 2052 bits" in r.getMessage() for r in caplog.records)
    for kid in ("enc", "weak", "curve", "alg", "roca", "odd"):
        assert any(f"key {kid} ignored" in r.getMessage() for r in caplog.records), kid
    assert not decide(mint(weak, kid="weak")).allowed
    assert not decide(mint(RSA, kid="enc")).allowed


def test_keys_sharing_a_kid_are_all_ignored(decider, idp, caplog):
    idp.jwks = {"keys": [public_jwk(RSA, "dup", "RS256"), public_jwk(ATTACKER, "dup", "RS256"),
                         public_jwk(RSA_NEW, "k2", "RS256")]}
    decide = decider(refetch_interval=3600)
    with caplog.at_level(logging.WARNING, logger="authz.jwks"):
        assert decide(mint(RSA_NEW, kid="k2")).allowed
    assert any("2 keys share kid 'dup'; all of them ignored" in r.getMessage() for r in caplog.records)
    for signer in (RSA, ATTACKER):
        d = decide(mint(signer, kid="dup"))
        assert (d.status, d.reason) == (401, Reason.CREDENTIALS_INVALID)


def test_a_keyset_mixing_symmetric_and_asymmetric_keys_is_refused(decider, idp, policy_dir, store):
    idp.jwks = {"keys": [public_jwk(RSA, "k1", "RS256"), {"kty": "oct", "kid": "oct", "k": b64(b"s" * 64)}]}
    d = decider()(mint(RSA, kid="k1"))
    assert (d.status, d.reason) == (500, Reason.UPSTREAM_UNAVAILABLE)  # no usable keyset at all
    (policy_dir / "keys").mkdir()
    (policy_dir / "keys" / "mixed.jwks.json").write_text(json.dumps(idp.jwks))
    with pytest.raises(PolicyError, match="mixes symmetric"):
        decider(jwks_uri=None, jwks_file="keys/mixed.jwks.json")


def test_unknown_kid_while_the_idp_is_down_is_upstream_unavailable(decider, idp):
    decide = decider(refetch_interval=1)
    assert decide(mint(RSA, kid="k1")).allowed
    idp.down = True
    d = decide(mint(RSA_NEW, kid="k2"))  # fetched a moment ago: rate-limited, last fetch was good
    assert (d.status, d.reason) == (401, Reason.CREDENTIALS_INVALID)
    time.sleep(1.1)
    for _ in range(3):  # the first one tries the IdP, the next ones know it failed
        d = decide(mint(RSA_NEW, kid="k2"))
        assert (d.status, d.reason) == (500, Reason.UPSTREAM_UNAVAILABLE)
    assert decide(mint(RSA, kid="k1", jti="known")).allowed  # known keys still verify
    idp.down = False
    time.sleep(1.1)
    # IdP back: a background attempt (no request waits on it) finds it, and a kid it does
    # not know is then invalid; until then the answer stays 500, never an allow.
    deadline, seen = time.monotonic() + 5, []
    while time.monotonic() < deadline:
        d = decide(mint(ATTACKER, kid="k3"))
        seen.append((d.status, d.reason))
        if d.status == 401:
            break
        time.sleep(0.1)
    assert seen[-1] == (401, Reason.CREDENTIALS_INVALID)
    assert set(seen[:-1]) <= {(500, Reason.UPSTREAM_UNAVAILABLE)}


def test_rotation_at_the_idp_is_picked_up(decider, idp):
    decide = decider(refetch_interval=1)
    assert decide(mint(RSA, kid="k1")).allowed
    idp.jwks = {"keys": [public_jwk(RSA_NEW, "k2", "RS256")]}
    time.sleep(1.1)
    assert decide(mint(RSA_NEW, kid="k2")).allowed


def test_cache_control_drives_background_refresh(decider, idp):
    idp.cache_control = "public, max-age=1"
    decide = decider(refetch_interval=3600)
    assert decide(mint(RSA)).allowed
    idp.jwks = {"keys": [public_jwk(RSA_NEW, "k2", "RS256")]}
    time.sleep(1.2)
    decide(mint(RSA))  # past max-age: served from cache, refresh starts in the background
    deadline = time.time() + 3
    while not decide(mint(RSA_NEW, kid="k2")).allowed and time.time() < deadline:
        time.sleep(0.05)
    assert decide(mint(RSA_NEW, kid="k2")).allowed
    assert not decide(mint(RSA, kid="k1", jti="fresh")).allowed  # withdrawn key: no longer trusted


def test_outage_serves_known_keys_for_max_stale_only(decider, idp):
    idp.cache_control = "max-age=1"
    decide = decider(max_stale=2)
    assert decide(mint(RSA, jti="a")).allowed
    idp.down = True
    time.sleep(1.3)
    assert decide(mint(RSA, jti="b")).allowed  # stale, within max_stale
    time.sleep(2.0)
    d = decide(mint(RSA, jti="c"))
    assert (d.allowed, d.status, d.reason) == (False, 500, Reason.UPSTREAM_UNAVAILABLE)
    idp.down = False
    # Back within a retry interval: a background attempt (at most one a second while
    # failing; requests are not held for it) finds the IdP again.
    deadline = time.monotonic() + 5
    while not decide(mint(RSA, jti="d")).allowed:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_repeated_token_skips_cryptography_but_not_checks(decider, store, monkeypatch):
    decide = decider(require={"use": "idp_jwt", "scopes": ["orders:read"]})
    from authz.authenticators import jose

    calls = []
    real = jose.signature_valid
    monkeypatch.setattr(jose, "signature_valid", lambda *a: calls.append(1) or real(*a))
    token = mint(RSA, jti="tok-1")
    assert decide(token).allowed and decide(token).allowed
    assert len(calls) == 1
    narrow = mint(RSA, jti="tok-2", scope="other")
    assert decide(narrow).reason == Reason.INSUFFICIENT_SCOPE
    assert decide(narrow).reason == Reason.INSUFFICIENT_SCOPE
    revoke(store, "jti", "tok-1", ISSUER)
    assert decide(token).reason == Reason.CREDENTIAL_REVOKED
    assert len(calls) == 2


def test_cached_token_still_expires(decider):
    decide = decider(leeway=0)
    token = mint(RSA, exp=int(time.time()) + 2)
    assert decide(token).allowed
    time.sleep(2.1)
    assert decide(token).reason == Reason.CREDENTIAL_EXPIRED


def test_revocation_by_jti_any_issuer_or_one(decider, store):
    decide = decider()
    revoke(store, "jti", "j-any")
    revoke(store, "jti", "j-other", "https://someone-else.example.com")
    assert decide(mint(RSA, jti="j-any")).reason == Reason.CREDENTIAL_REVOKED
    assert decide(mint(RSA, jti="j-other")).allowed


@pytest.mark.parametrize(("options", "message"), [
    ({"algorithms": ["HS256", "RS256"]}, "cannot be mixed"),
    ({"jwks_uri": "http://idp.example.com/jwks"}, "must be an https:// URL"),
    ({"jwks_uri": None, "jwks_file": "missing.json"}, "cannot read"),
    ({"jwks_uri": None, "secret_env": "NOPE_NOT_SET"}, "goes with HS* algorithms"),
    ({"jwks_uri": None}, "give exactly one of"),
    ({"leeway": 301}, "must be at most 300"),
    ({"algorithms": ["none"]}, "is not one of"),
])
def test_bad_configuration_is_reported(decider, options, message):
    from authz.policy import PolicyError

    with pytest.raises(PolicyError) as info:
        decider(**options)
    assert message in str(info.value), str(info.value)
