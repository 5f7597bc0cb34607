"""X-Auth-Token: an upstream verifies who the caller is with nothing but authz's
JWKS endpoint and PyJWT; rotated-out keys stay published only while their tokens live."""

import json
import subprocess
import time

import jwt
import pytest
import requests

from authz.admin import Admin
from tests.conftest import BIN, propagated, write_policy

pytestmark = pytest.mark.both_stores

POLICY = {
    "authenticators": {"key": {"type": "api_key"}, "public": {"type": "anonymous"}},
    "routes": [
        {"id": "signed", "match": {"paths": ["/signed/**"]}, "require": "key", "identity_token": True,
         "strip_credentials": True},
        {"id": "plain", "match": {"paths": ["/plain/**"]}, "require": "key"},
        {"id": "open", "match": {"paths": ["/open/**"]}, "require": "public", "identity_token": True},
    ],
}


def authz_cli(store, *args):
    out = subprocess.run([str(BIN / "authz"), "--db", store.url, *args, "--json"], capture_output=True,
                         text=True, check=True, timeout=30)
    return json.loads(out.stdout)


@pytest.fixture
def server(store, policy_dir, gunicorn):
    write_policy(policy_dir, POLICY)
    authz_cli(store, "db", "init")  # creates the first signing key
    return gunicorn(workers=2, AUTHZ_ISSUER="https://authz.internal", AUTHZ_IDENTITY_TOKEN_TTL="3")


def ask(server, path, key, method="GET"):
    return requests.request(method, server.url + "/ext-authz" + path, headers={"X-API-Key": key}, timeout=5)


def verify(server, token):
    """What an upstream does: fetch authz's JWKS, verify with PyJWT."""
    client = jwt.PyJWKClient(server.url + "/.well-known/jwks.json", cache_keys=False, cache_jwk_set=False)
    key = client.get_signing_key_from_jwt(token)
    return jwt.decode(token, key, algorithms=["EdDSA"], issuer="https://authz.internal",
                      options={"require": ["exp", "iat", "iss", "sub"]})


def test_upstream_verifies_the_identity_with_the_jwks(store, server):
    _, key = Admin(store).keys.create("partner-a", ["orders:read"])
    r = ask(server, "/signed/x", key)
    assert r.status_code == 200
    claims = verify(server, r.headers["X-Auth-Token"])
    assert claims["sub"] == "partner-a" and claims["route"] == "signed" and claims["methods"] == ["api_key"]
    assert claims["identities"] == [{"id": "partner-a", "kind": "client", "method": "api_key"}]
    assert claims["exp"] - claims["iat"] == 3 and claims["scope"] == "orders:read"
    assert jwt.get_unverified_header(r.headers["X-Auth-Token"])["kid"].startswith("authz-")
    assert "X-Auth-Token" not in ask(server, "/plain/x", key).headers
    # strip_credentials: Envoy removes the consumed key before the upstream
    assert "x-api-key" in r.headers["x-envoy-auth-headers-to-remove"]


def test_tampered_or_foreign_tokens_do_not_verify(store, server):
    from cryptography.hazmat.primitives.asymmetric import ed25519

    _, key = Admin(store).keys.create("partner-a")
    token = ask(server, "/signed/x", key).headers["X-Auth-Token"]
    head, _body, sig = token.split(".")
    forged_body = jwt.utils.base64url_encode(json.dumps({**jwt.decode(token, options={"verify_signature": False}),
                                                         "sub": "admin"}).encode()).decode()
    with pytest.raises(jwt.InvalidSignatureError):
        verify(server, f"{head}.{forged_body}.{sig}")
    kid = jwt.get_unverified_header(token)["kid"]
    impostor = jwt.encode({"sub": "admin", "iss": "https://authz.internal", "iat": int(time.time()),
                           "exp": int(time.time()) + 60}, ed25519.Ed25519PrivateKey.generate(), algorithm="EdDSA",
                          headers={"kid": kid})
    with pytest.raises(jwt.InvalidSignatureError):
        verify(server, impostor)


def test_rotation(store, server):
    _, key = Admin(store).keys.create("partner-a")
    old_token = ask(server, "/signed/x", key).headers["X-Auth-Token"]
    rotated = authz_cli(store, "signing-keys", "rotate")
    assert rotated["retired"] == [jwt.get_unverified_header(old_token)["kid"]]
    assert verify(server, old_token)["sub"] == "partner-a"  # old key still published
    kids = propagated(lambda: {k["kid"] for k in requests.get(server.url + "/.well-known/jwks.json",
                                                              timeout=5).json()["keys"]},
                      lambda kids: rotated["kid"] in kids)
    assert kids == {rotated["kid"], *rotated["retired"]}
    deadline = time.time() + 15  # workers pick the new key up within KEY_REFRESH (10 s)
    while jwt.get_unverified_header(ask(server, "/signed/x", key).headers["X-Auth-Token"])["kid"] != rotated["kid"]:
        assert time.time() < deadline
        time.sleep(0.5)
    new_token = ask(server, "/signed/x", key).headers["X-Auth-Token"]
    assert verify(server, new_token)["sub"] == "partner-a"
    time.sleep(3.5)  # the old token's lifetime
    with pytest.raises(jwt.ExpiredSignatureError):
        verify(server, old_token)


def test_retired_key_leaves_the_jwks_after_its_tokens_expired(store):
    from authz.engine.identity_token import keep_retired_for

    Admin(store).signing_keys.rotate(keep_retired_for(60))
    first = store.signing_keys.active().kid
    Admin(store).signing_keys.rotate(0.5)  # as if the tokens' lifetime had been half a second
    published = {k["kid"] for k in store.signing_keys.published()}
    assert first in published
    time.sleep(0.6)
    published = {k["kid"] for k in store.signing_keys.published()}
    assert first not in published and store.signing_keys.active().kid in published


def test_anonymous_identity_token_has_no_subject(store, server):
    r = requests.get(server.url + "/ext-authz/open/x", timeout=5)
    claims = jwt.decode(r.headers["X-Auth-Token"], options={"verify_signature": False})
    assert "sub" not in claims and claims["methods"] == ["anonymous"]


def test_identity_token_needs_a_signing_key(store, policy_dir):
    from authz.app import create_app
    from authz.config import Settings
    from authz.store import StoreError

    write_policy(policy_dir, POLICY)
    with pytest.raises(StoreError, match="signing-keys rotate"):
        create_app(Settings(db_path=store.url, policy_dir=policy_dir))
