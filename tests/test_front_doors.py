"""One policy, five front doors, the same answers.

Real nginx (``deploy/nginx/authz.conf``) and real Caddy (``deploy/caddy/Caddyfile``)
in front of authz under gunicorn; Envoy's HTTP ext_authz and Traefik's forwardAuth
requests shaped exactly as docs/proxies.md says those proxies send them; Envoy's gRPC
ext_authz through a real gRPC channel to ``authz grpc``. A table of requests — odd
methods, HEAD and OPTIONS included — must give the same status and principal
through every door."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time

import grpc
import http_sf
import jwt
import pytest
import requests
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from envoy.service.auth.v3 import external_auth_pb2_grpc

from authz.admin import Admin
from authz.authenticators import dpop
from authz.credentials import passwords, request_signing
from tests.conftest import (
    BIN,
    ROOT,
    Server,
    free_port,
    gunicorn_env,
)
from tests.doors import ENVOY_PASSES, TRAEFIK_PASSES, door_stack, envoy_check_request
from tests.idp import AUDIENCE, ISSUER, b64, ec_key, mint, public_jwk, public_pem, rsa_key

pytestmark = pytest.mark.both_stores

POLICY = json.loads((ROOT / "policies" / "api.json").read_text())
# Beside it: a browser's publishable key, from the shop's origin only, read-only on a
# route open to every method.
BROWSER_POLICY = {"authenticators": {"browser": {"type": "api_key", "publishable": True}},
                  "routes": [{"id": "catalog", "match": {"paths": ["/v1/catalog/**"]}, "require": "browser"}]}
SHOP = "https://shop.example.com"
# Beside them: payments need a DPoP-bound token (RFC 9449) with a fresh proof per request.
IDP, CLIENT = rsa_key(), ec_key()
DPOP_POLICY = {"authenticators": {"payments_jwt": {"type": "jwt", "issuer": ISSUER, "audience": AUDIENCE,
                                                   "algorithms": ["RS256"], "public_key_file": "idp.pem"}},
               "routes": [{"id": "payments", "match": {"paths": ["/v1/payments/**"]},
                           "require": {"use": "payments_jwt", "dpop": "required"}}]}

# And transfers take only signed API keys (RFC 9421), a fresh signature per request.
SIGNED_POLICY = {"authenticators": {"signed_key": {"type": "api_key", "signatures": "required"}},
                 "routes": [{"id": "transfers", "match": {"paths": ["/v1/transfers/**"]}, "require": "signed_key"}]}
SIGNER = ed25519.Ed25519PrivateKey.generate()


def _envoy_relays() -> set[str]:
    """The headers of authz's deny that Envoy's HTTP check hands the client, as shipped."""
    config = yaml.safe_load((ROOT / "deploy" / "envoy" / "envoy-http.yaml").read_text())
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    ext = next(f for f in manager["http_filters"] if f["name"] == "envoy.filters.http.ext_authz")
    return {p["exact"] for p in ext["typed_config"]["http_service"]["authorization_response"]
            ["allowed_client_headers"]["patterns"]}


ENVOY_RELAYS = _envoy_relays()

def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, new_store):
    def credentials(store) -> dict:
        store.principals.add_user("alice", passwords.hash_password("alice-pw"), roles=["admin", "approver"])
        creds = {
            "reader": Admin(store).keys.create("partner-a", ["orders:read"])[1],
            "writer": Admin(store).keys.create("partner-w", ["orders:read", "orders:write"])[1],
            "alice": basic("alice", "alice-pw"),
            "shop": Admin(store).keys.create("web-shop", publishable=True, origins=[SHOP])[1],
        }
        signer, creds["signer"] = Admin(store).keys.create("partner-s", signing=request_signing.ed25519_public(
            SIGNER.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)))
        creds["signer_id"] = signer.id
        return {"creds": creds}

    files = {"api.json": POLICY, "browser.json": BROWSER_POLICY, "dpop.json": DPOP_POLICY,
             "signed.json": SIGNED_POLICY, "idp.pem": public_pem(IDP)}
    with door_stack(tmp_path_factory, new_store, "doors", files, echo={"X-Seen-Principal": "X-Auth-Principal"},
                    prepare=credentials) as started:
        yield started


def via_nginx(stack, method, path, headers):
    r = requests.request(method, stack["nginx"].url + path, headers={"Host": "api.example.com", **headers}, timeout=5)
    return r.status_code, r.headers.get("X-Seen-Principal") or None if r.status_code == 200 else None


def via_caddy(stack, method, path, headers):
    r = requests.request(method, stack["caddy"].url + path, headers={"Host": "api.example.com", **headers}, timeout=5)
    return r.status_code, r.headers.get("X-Seen-Principal") or None if r.status_code == 200 else None


def via_envoy_http(stack, method, path, headers):
    # Envoy: the client's method, path_prefix + :path, the Host, allowed_headers only.
    allowed = {k: v for k, v in headers.items() if k.lower() in ENVOY_PASSES}
    r = requests.request(method, stack["authz"].url + "/ext-authz" + path,
                         headers={"Host": "api.example.com", "Content-Length": "0", **allowed}, timeout=5)
    return r.status_code, r.headers.get("X-Auth-Principal") if r.status_code == 200 else None


def via_traefik(stack, method, path, headers):
    # Traefik forwardAuth: GET to the address, authRequestHeaders copied, X-Forwarded-* set.
    sent = {k: v for k, v in headers.items() if k.lower() in TRAEFIK_PASSES}
    sent |= {"X-Forwarded-Method": method, "X-Forwarded-Proto": "https",
             "X-Forwarded-Host": "api.example.com", "X-Forwarded-Uri": path, "X-Forwarded-For": "203.0.113.7"}
    r = requests.get(stack["authz"].url + "/forward-auth", headers=sent, timeout=5)
    # Traefik copies authResponseHeaders as they are: an empty one means no principal.
    return r.status_code, (r.headers.get("X-Auth-Principal") or None) if r.status_code == 200 else None


def via_envoy_grpc(stack, method, path, headers):
    response = stack["grpc"].Check(envoy_check_request(method, path, headers), timeout=5)
    if response.status.code == 0:
        sent = {h.header.key: h.header.value for h in response.ok_response.headers}
        return 200, sent.get("x-auth-principal")
    return response.denied_response.status.code, None


DOORS = {"nginx": via_nginx, "envoy-http": via_envoy_http, "envoy-grpc": via_envoy_grpc,
         "traefik": via_traefik, "caddy": via_caddy}

TABLE = [
    # method, path, credentials, expected status, expected principal
    ("GET", "/v1/orders/42?expand=items", ["reader"], 200, "partner-a"),
    ("GET", "/v1/orders/42", [], 401, None),
    ("GET", "/v1/orders/42", ["bogus"], 401, None),
    ("DELETE", "/v1/orders/42", ["reader", "alice"], 403, None),
    ("POST", "/v1/orders", ["writer", "alice"], 200, "alice"),
    ("GET", "/admin/users", ["alice"], 200, "alice"),
    ("PURGE", "/admin/cache", ["alice"], 200, "alice"),
    ("OPTIONS", "/v1/orders", ["reader"], 403, None),
    ("HEAD", "/v1/orders/42", ["reader"], 200, "partner-a"),
    ("GET", "/healthz", [], 200, None),
    ("GET", "/elsewhere", ["alice"], 403, None),
    ("GET", "/v1/catalog/7", ["shop", "from-shop"], 200, "web-shop"),
    ("GET", "/v1/catalog/7", ["shop", "from-elsewhere"], 403, None),
    ("GET", "/v1/catalog/7", ["shop"], 403, None),
    ("POST", "/v1/catalog/7", ["shop", "from-shop"], 403, None),
]


def headers_for(stack, names) -> dict:
    headers = {}
    for name in names:
        if name == "alice":
            headers["Authorization"] = stack["creds"]["alice"]
        elif name == "bogus":
            headers["X-API-Key"] = "sk_live_" + "B" * 43
        elif name == "from-shop":
            headers["Origin"] = SHOP
        elif name == "from-elsewhere":
            headers["Origin"] = "https://evil.example.net"
        else:
            headers["X-API-Key"] = stack["creds"][name]
    return headers


@pytest.mark.parametrize("door", list(DOORS))
def test_same_decision_through_every_door(stack, door):
    got = [(m, p, DOORS[door](stack, m, p, headers_for(stack, names))) for m, p, names, *_ in TABLE]
    expected = [(m, p, (status, principal)) for m, p, _, status, principal in TABLE]
    assert got == expected


# The scheme each door tells authz (nginx $scheme, Caddy's X-Forwarded-Proto; the Envoy
# HTTP check without X-Forwarded-Proto is http; Traefik's and the gRPC request's https).
DOOR_SCHEMES = {"nginx": "http", "caddy": "http", "envoy-http": "http", "traefik": "https", "envoy-grpc": "https"}


@pytest.mark.parametrize("door", list(DOORS))
def test_dpop_through_every_door(stack, door):
    """A DPoP-bound token with a proof made here (PyJWT) is allowed through every door;
    the same proof again, a proof for another method, and the token as Bearer are 401."""
    jwk = public_jwk(CLIENT, None, "ES256")
    token = mint(IDP, kid=None, cnf={"jkt": dpop.thumbprint(jwk)})
    path = "/v1/payments/7"
    url = f"{DOOR_SCHEMES[door]}://api.example.com{path}"

    def proof(method="GET"):
        claims = {"jti": secrets.token_urlsafe(16), "htm": method, "htu": url, "iat": int(time.time()),
                  "ath": b64(hashlib.sha256(token.encode()).digest())}
        return jwt.encode(claims, CLIENT, algorithm="ES256", headers={"typ": "dpop+jwt", "jwk": jwk})

    made = proof()
    headers = {"Authorization": f"DPoP {token}", "DPoP": made}
    assert DOORS[door](stack, "GET", path + "?page=2", headers) == (200, "alice")
    assert DOORS[door](stack, "GET", path, headers)[0] == 401  # replayed
    assert DOORS[door](stack, "GET", path, {**headers, "DPoP": proof("POST")})[0] == 401
    assert DOORS[door](stack, "GET", path, {"Authorization": f"Bearer {token}", "DPoP": proof()})[0] == 401


def test_envoy_http_decides_options_and_keeps_the_query(stack):
    r = requests.options(stack["authz"].url + "/ext-authz/v1/orders/1?x=%2F", timeout=5,
                         headers={"X-API-Key": stack["creds"]["reader"]})
    assert (r.status_code, r.headers["X-Auth-Reason"]) == (403, "no_route")
    assert r.headers["Content-Type"] == "application/json" and r.json()["decision"] == "deny"


def test_envoy_http_removes_forged_identity_headers(stack):
    r = requests.get(stack["authz"].url + "/ext-authz/v1/orders/1", timeout=5,
                     headers={"X-API-Key": stack["creds"]["reader"]})
    removed = [h.strip() for h in r.headers["x-envoy-auth-headers-to-remove"].split(",")]
    assert "x-auth-user" in removed and "x-auth-service" in removed and "x-auth-client" not in removed


def test_grpc_deny_carries_status_headers_and_body(stack):
    response = stack["grpc"].Check(envoy_check_request("GET", "/v1/orders", {}), timeout=5)
    assert response.status.code == 16
    denied = response.denied_response
    assert denied.status.code == 401
    sent = [(h.header.key, h.header.value) for h in denied.headers]
    assert ("x-auth-reason", "credentials_missing") in sent
    assert ("www-authenticate", 'ApiKey realm="partners"') in sent
    assert json.loads(denied.body) == {"decision": "deny", "reason": "credentials_missing", "route": "orders-read"}
    response = stack["grpc"].Check(envoy_check_request("GET", "/nowhere", {}), timeout=5)
    assert (response.status.code, response.denied_response.status.code) == (7, 403)


def test_grpc_allow_overwrites_and_removes_identity_headers(stack):
    response = stack["grpc"].Check(envoy_check_request(
        "GET", "/v1/orders/1", {"x-api-key": stack["creds"]["reader"], "x-auth-user": "root"}), timeout=5)
    assert response.status.code == 0
    ok = response.ok_response
    assert {h.header.key for h in ok.headers} >= {"x-auth-principal", "x-auth-client", "x-auth-methods"}
    assert all(h.append_action == h.OVERWRITE_IF_EXISTS_OR_ADD for h in ok.headers)
    assert "x-auth-user" in ok.headers_to_remove


def test_grpc_peer_certificate(stack, tmp_path):
    from urllib.parse import quote

    from tests.pki import Pki

    pki = Pki()
    leaf = pki.leaf()
    policy_dir = tmp_path / "p"
    (policy_dir / "keys").mkdir(parents=True)
    (policy_dir / "keys" / "ca.pem").write_bytes(pki.root.pem + pki.intermediate.pem)
    (policy_dir / "mesh.json").write_text(json.dumps({
        "authenticators": {"mesh": {"type": "mtls", "ca_file": "keys/ca.pem", "cert_sources": ["envoy_grpc"]}},
        "routes": [{"id": "mesh", "require": "mesh"}]}))
    port = free_port()
    server = Server([str(BIN / "authz"), "--db", stack["store"].url, "grpc", "--bind", f"127.0.0.1:{port}"],
                    port, env=gunicorn_env(stack["store"], policy_dir), log=tmp_path / "grpc.log")
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=20)
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        response = stub.Check(envoy_check_request("GET", "/x", {}, quote(leaf.pem.decode(), safe="")), timeout=5)
        assert response.status.code == 0
        sent = {h.header.key: h.header.value for h in response.ok_response.headers}
        assert sent["x-auth-service"] == "spiffe://corp/ns/payments/sa/api"
        assert stub.Check(envoy_check_request("GET", "/x", {}), timeout=5).status.code == 16
        # graceful shutdown on SIGTERM
        server.proc.terminate()
        assert server.proc.wait(15) == 0
        channel.close()
    finally:
        server.stop()
    assert "shutting down" in server.output()


def test_grpc_reloads_policy_on_sighup_and_keeps_it_when_broken(stack, tmp_path):
    policy_dir = tmp_path / "p"
    policy_dir.mkdir()
    (policy_dir / "a.json").write_text(json.dumps(
        {"authenticators": {"p": {"type": "anonymous"}}, "routes": [{"id": "open", "require": "p"}]}))
    port = free_port()
    server = Server([str(BIN / "authz"), "--db", stack["store"].url, "grpc", "--bind", f"127.0.0.1:{port}"],
                    port, env=gunicorn_env(stack["store"], policy_dir), log=tmp_path / "grpc.log")
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=20)
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        assert stub.Check(envoy_check_request("GET", "/x", {}), timeout=5).status.code == 0
        (policy_dir / "a.json").write_text(json.dumps(
            {"authenticators": {"k": {"type": "api_key"}}, "routes": [{"id": "closed", "require": "k"}]}))
        server.proc.send_signal(1)
        deadline = time.time() + 10
        while stub.Check(envoy_check_request("GET", "/x", {}), timeout=5).status.code == 0:
            assert time.time() < deadline
            time.sleep(0.1)
        (policy_dir / "a.json").write_text("{broken")
        server.proc.send_signal(1)
        time.sleep(0.5)
        assert stub.Check(envoy_check_request("GET", "/x", {}), timeout=5).status.code == 16
        channel.close()
    finally:
        server.stop()
    assert "reload refused" in server.output()


def test_grpc_untrusted_peer(stack, tmp_path):
    port = free_port()
    env = gunicorn_env(stack["store"], ROOT / "policies", AUTHZ_TRUSTED_PROXIES="10.0.0.0/8")
    server = Server([str(BIN / "authz"), "--db", stack["store"].url, "grpc", "--bind", f"127.0.0.1:{port}"],
                    port, env=env, log=tmp_path / "grpc.log")
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=20)
        response = external_auth_pb2_grpc.AuthorizationStub(channel).Check(
            envoy_check_request("GET", "/healthz", {}), timeout=5)
        assert (response.status.code, response.denied_response.status.code) == (7, 403)
        assert ("x-auth-reason", "untrusted_proxy") in [(h.header.key, h.header.value)
                                                        for h in response.denied_response.headers]
        channel.close()
    finally:
        server.stop()


def test_caddy_deny_reaches_the_client(stack):
    r = requests.get(stack["caddy"].url + "/v1/orders/1", headers={"Host": "api.example.com"}, timeout=5)
    assert r.status_code == 401
    assert r.headers.get("WWW-Authenticate", "").startswith("ApiKey")
    assert r.json()["reason"] == "credentials_missing"


def test_caddy_client_cannot_forge_identity_headers(stack):
    r = requests.get(stack["caddy"].url + "/healthz", headers={"Host": "api.example.com", "X-Auth-Principal": "root"},
                     timeout=5)
    assert r.status_code == 200 and r.headers.get("X-Seen-Principal", "") == ""


@pytest.mark.parametrize("door", list(DOORS))
def test_signed_api_key_through_every_door(stack, door):
    """An API key with an RFC 9421 signature made here (the http-message-signatures
    library's signer, over the URL as the client sends it) is allowed through every door;
    the same signature again, for another method, for another URL, or none, is 401."""
    from http_message_signatures import HTTPMessageSigner, MappingKeyResolver, algorithms

    key, key_id = stack["creds"]["signer"], stack["creds"]["signer_id"]
    target = "/v1/transfers/7?page=2"
    signer = HTTPMessageSigner(signature_algorithm=algorithms.ED25519,
                               key_resolver=MappingKeyResolver(public_keys={}, private_keys={key_id: SIGNER}))

    def signed(method="GET", path=target):
        request = type("Request", (), {"method": method, "url": f"{DOOR_SCHEMES[door]}://api.example.com{path}",
                                       "headers": {"X-API-Key": key}})()
        signer.sign(request, key_id=key_id, nonce=secrets.token_urlsafe(16), label="sig1",
                    covered_component_ids=("@method", "@target-uri"))
        return request.headers

    headers = signed()
    assert DOORS[door](stack, "GET", target, headers) == (200, "partner-s")
    assert DOORS[door](stack, "GET", target, headers)[0] == 401  # replayed
    assert DOORS[door](stack, "POST", target, signed("GET"))[0] == 401
    assert DOORS[door](stack, "GET", "/v1/transfers/7?page=3", signed())[0] == 401
    assert DOORS[door](stack, "GET", target, {"X-API-Key": key})[0] == 401
    # RFC 9421 §5.1: the 401 tells the client the signature wanted, by the key it presented
    status, wanted = accept_signature_seen(stack, door, "GET", target, {"X-API-Key": key})
    assert status == 401 and wanted is not None
    members, params = http_sf.parse(wanted.encode(), tltype="dictionary")["sig1"]
    assert [name for name, _ in members] == ["@method", "@target-uri"]
    assert params == {"keyid": key_id, "alg": "ed25519", "created": True}
    assert accept_signature_seen(stack, door, "GET", target, signed()) == (200, None)
    assert accept_signature_seen(stack, door, "GET", target, {**signed(), "X-API-Key": "sk_live_" + "B" * 43}) \
        == (401, None)  # an unknown key: no key named, no signature asked for


def accept_signature_seen(stack, door, method, path, headers) -> tuple[int, str | None]:
    """The status and the ``Accept-Signature`` the client gets through ``door``: nginx and
    Caddy for real; Envoy's HTTP check as its shipped allowed_client_headers let it by;
    gRPC's denied_response; Traefik relays a deny's answer whole."""
    if door in ("nginx", "caddy"):
        r = requests.request(method, stack[door].url + path, headers={"Host": "api.example.com", **headers},
                             timeout=5)
        return r.status_code, r.headers.get("Accept-Signature")
    if door == "envoy-grpc":
        response = stack["grpc"].Check(envoy_check_request(method, path, headers), timeout=5)
        if response.status.code == 0:
            return 200, next((h.header.value for h in response.ok_response.response_headers_to_add
                              if h.header.key == "accept-signature"), None)
        return response.denied_response.status.code, next(
            (h.header.value for h in response.denied_response.headers if h.header.key == "accept-signature"), None)
    if door == "envoy-http":
        allowed = {k: v for k, v in headers.items() if k.lower() in ENVOY_PASSES}
        r = requests.request(method, stack["authz"].url + "/ext-authz" + path,
                             headers={"Host": "api.example.com", "Content-Length": "0", **allowed}, timeout=5)
        relayed = r.status_code != 200 and "accept-signature" in ENVOY_RELAYS
        return r.status_code, r.headers.get("Accept-Signature") if relayed else None
    sent = {k: v for k, v in headers.items() if k.lower() in TRAEFIK_PASSES}
    sent |= {"X-Forwarded-Method": method, "X-Forwarded-Proto": "https", "X-Forwarded-Host": "api.example.com",
             "X-Forwarded-Uri": path, "X-Forwarded-For": "203.0.113.7"}
    r = requests.get(stack["authz"].url + "/forward-auth", headers=sent, timeout=5)
    return r.status_code, r.headers.get("Accept-Signature") if r.status_code != 200 else None
