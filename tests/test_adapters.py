"""The HTTP front doors of the core: nginx ``/auth-request`` and ``POST /v1/decisions``.

Requests are shaped as nginx sends them (docs/proxies.md, "nginx"): always GET, the original
request in X-Original-* headers, every client header passed through.
"""

import base64
import json

import pytest

from authz.admin import Admin
from tests.conftest import ROOT, add_user

pytestmark = pytest.mark.both_stores

POLICY = json.loads((ROOT / "policies" / "api.json").read_text())


@pytest.fixture
def client(store, make_client):
    add_user(store, "alice", "alice-pw", scopes=["orders:read"], roles=["admin", "approver"])
    return make_client(POLICY)


@pytest.fixture
def key(store):
    return Admin(store).keys.create("partner-a", ["orders:read", "orders:write"])[1]


def nginx(client, uri, method="GET", remote="127.0.0.1", **headers):
    base = {"X-Original-URI": uri, "X-Original-Method": method, "Host": "api.example.com"}
    base.update({k.replace("_", "-"): v for k, v in headers.items()})
    return client.get("/auth-request", headers=base, environ_base={"REMOTE_ADDR": remote})


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_allow_sets_identity_headers(client, key):
    r = nginx(client, "/v1/orders/42?expand=items", X_API_Key=key)
    assert r.status_code == 200
    assert r.headers["X-Auth-Principal"] == "partner-a"
    assert r.headers["X-Auth-Client"] == "partner-a"
    assert "X-Auth-User" not in r.headers and "X-Auth-Service" not in r.headers
    assert r.headers["X-Auth-Methods"] == "api_key"
    assert r.headers["X-Auth-Scopes"] == "orders:read orders:write"
    assert r.headers["X-Auth-Route"] == "orders-read"
    assert key not in r.get_data(as_text=True) and key not in str(r.headers)


def test_all_combination_sets_both_layers(client, key):
    r = nginx(client, "/v1/orders", "POST", X_API_Key=key, Authorization=basic("alice", "alice-pw"))
    assert r.status_code == 200
    assert (r.headers["X-Auth-Principal"], r.headers["X-Auth-User"], r.headers["X-Auth-Client"]) == (
        "alice", "alice", "partner-a")
    assert r.headers["X-Auth-Methods"] == "api_key,basic"


def test_missing_credentials_401_with_challenges(client):
    r = nginx(client, "/v1/orders")
    assert r.status_code == 401
    assert r.headers["X-Auth-Reason"] == "credentials_missing"
    assert r.headers.getlist("WWW-Authenticate") == [
        'ApiKey realm="partners"', 'Basic realm="staff", charset="UTF-8"']
    # nginx never shows the body and keeps its connection only without one: headers only
    assert (r.data, r.headers["X-Auth-Route"], r.headers["Content-Length"]) == (b"", "orders-read", "0")


def test_invalid_password_401(client):
    r = nginx(client, "/v1/orders", Authorization=basic("alice", "wrong"))
    assert (r.status_code, r.headers["X-Auth-Reason"]) == (401, "credentials_invalid")
    assert "wrong" not in r.get_data(as_text=True)


def test_forbidden_403(client, store):
    _, narrow = Admin(store).keys.create("partner-b", ["orders:read"])
    r = nginx(client, "/v1/orders", "DELETE", X_API_Key=narrow, Authorization=basic("alice", "alice-pw"))
    assert (r.status_code, r.headers["X-Auth-Reason"]) == (403, "insufficient_scope")
    assert "WWW-Authenticate" not in r.headers


def test_no_route_403(client):
    r = nginx(client, "/nowhere")
    assert (r.status_code, r.headers["X-Auth-Reason"]) == (403, "no_route")
    assert r.headers["X-Auth-Route"] == ""


def test_anonymous_route(client):
    r = nginx(client, "/healthz")
    assert r.status_code == 200 and r.headers["X-Auth-Methods"] == "anonymous"
    assert "X-Auth-Principal" not in r.headers


@pytest.mark.parametrize("uri", ["/v1/%2e%2e/%2e%2e/etc/passwd", "/v1/orders%2Fsecret", "/a%00", "/../x"])
def test_unsafe_path_is_bad_request(client, uri):
    r = nginx(client, uri)
    assert (r.status_code, r.headers["X-Auth-Reason"]) == (403, "bad_request")


@pytest.mark.parametrize("uri", ["/v1/../admin/users", "/healthz/../admin/users", "/admin//users",
                                 "/healthz/%2e%2e/admin/users", "/healthz;/../admin/users", "/healthz#/../admin"])
def test_ambiguous_path_cannot_dodge_a_route(client, uri):
    # An upstream may resolve /healthz/../admin/users to /admin/users: refused, never
    # matched against the anonymous route — not even for a user who could pass admin.
    r = nginx(client, uri, Authorization=basic("alice", "alice-pw"))
    assert (r.status_code, r.headers["X-Auth-Reason"]) == (403, "bad_request")


def test_encoded_path_meets_the_route_it_decodes_to(client):
    r = nginx(client, "/%61dmin/users")
    assert (r.status_code, r.headers["X-Auth-Reason"]) == (401, "credentials_missing")
    assert r.headers["X-Auth-Route"] == "admin"


def test_missing_original_headers_is_bad_request(client):
    r = client.get("/auth-request")
    assert (r.status_code, r.headers["X-Auth-Reason"]) == (403, "bad_request")


def test_ingress_nginx_original_url(client, key):
    r = client.get("/auth-request", headers={
        "X-Original-URL": "https://api.example.com/v1/orders/7", "X-Original-Method": "GET", "X-API-Key": key})
    assert (r.status_code, r.headers["X-Auth-Route"]) == (200, "orders-read")


def test_untrusted_peer_is_refused(client, key):
    r = nginx(client, "/v1/orders", remote="192.0.2.10", X_API_Key=key)
    assert (r.status_code, r.headers["X-Auth-Reason"]) == (403, "untrusted_proxy")


def test_proxy_secret(store, make_client, key):
    client = make_client(POLICY, proxy_secret="s3cret-shared-with-nginx")
    assert nginx(client, "/v1/orders", X_API_Key=key).headers["X-Auth-Reason"] == "untrusted_proxy"
    r = nginx(client, "/v1/orders", X_API_Key=key, X_Authz_Proxy_Secret="wrong")
    assert r.headers["X-Auth-Reason"] == "untrusted_proxy"
    r = nginx(client, "/v1/orders", X_API_Key=key, X_Authz_Proxy_Secret="s3cret-shared-with-nginx")
    assert r.status_code == 200


def test_client_ip_from_forwarded_headers_feeds_ip_allowlist(store, client):
    _, key = Admin(store).keys.create("partner-ip", ["orders:read"], allow_ips=["203.0.113.0/24"])
    assert nginx(client, "/v1/orders", X_API_Key=key, X_Real_IP="203.0.113.5").status_code == 200
    r = nginx(client, "/v1/orders", X_API_Key=key, X_Real_IP="198.51.100.5")
    assert r.headers["X-Auth-Reason"] == "ip_not_allowed"
    # A client-supplied X-Forwarded-For entry left of an untrusted hop is not believed.
    r = nginx(client, "/v1/orders", X_API_Key=key, X_Forwarded_For="203.0.113.5, 198.51.100.5")
    assert r.headers["X-Auth-Reason"] == "ip_not_allowed"


def test_options_is_decided_not_auto_answered(client):
    r = client.options("/auth-request", headers={"X-Original-URI": "/v1/orders", "X-Original-Method": "GET"})
    assert r.status_code != 200
    r = client.options("/v1/decisions")
    assert r.status_code == 405


def test_decisions_api(client, key):
    r = client.post("/v1/decisions", json={
        "method": "GET", "url": "https://api.example.com/v1/orders/1", "headers": {"X-API-Key": key}})
    assert r.status_code == 200
    body = r.get_json()
    assert body["decision"] == "allow" and body["route"] == "orders-read"
    assert body["principal"] == {"id": "partner-a", "kind": "client", "method": "api_key",
                                 "scopes": ["orders:read", "orders:write"]}
    assert body["methods"] == ["api_key"] and len(body["policy_revision"]) == 12
    assert body["identities"][0]["credential"].startswith("key_")

    r = client.post("/v1/decisions", json={"method": "GET", "host": "api.example.com", "path": "/v1/orders"})
    assert r.status_code == 401 and r.get_json()["reason"] == "credentials_missing"
    assert r.headers.getlist("WWW-Authenticate")


@pytest.mark.parametrize(("body", "status"), [
    ("not json", 403),
    (json.dumps([1, 2]), 403),
    (json.dumps({"method": "GET"}), 403),
    (json.dumps({"url": "ftp://x/y"}), 403),
    (json.dumps({"url": "http://h/x", "headers": {"a": 1}}), 403),
    (json.dumps({"url": "http://h/x", "client_ip": "not-an-ip"}), 403),
    (json.dumps({"url": "http://h/a%2Fb"}), 403),
])
def test_decisions_api_bad_input(client, body, status):
    r = client.post("/v1/decisions", data=body, content_type="application/json")
    assert r.status_code == status and r.get_json()["reason"] == "bad_request"


def test_health_and_ready(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz").get_json()
    assert ready["status"] == "ready" and len(ready["revision"]) == 12


def test_internal_error_is_500_deny(client, key, store, monkeypatch):
    def broken(self, fingerprint):
        raise RuntimeError("database is locked")

    monkeypatch.setattr(type(store.keys), "find", broken)  # the backend's own key lookup, whichever it is
    r = nginx(client, "/v1/orders", X_API_Key=key)
    assert (r.status_code, r.headers["X-Auth-Reason"]) == (500, "internal_error")


def test_app_refuses_to_start_on_bad_policy_or_store(store, make_client, policy_dir, tmp_path):
    from authz.app import create_app
    from authz.config import Settings
    from authz.policy import PolicyError
    from authz.store import StoreError

    (policy_dir / "p.json").write_text('{"routes": [{"id": "x", "require": "nobody"}]}')
    with pytest.raises(PolicyError, match="unknown authenticator 'nobody'"):
        create_app(Settings(db_path=store.url, policy_dir=policy_dir))
    with pytest.raises(StoreError, match="run `authz db init`"):
        create_app(Settings(db_path=tmp_path / "missing.db", policy_dir=ROOT / "policies"))


def test_adapter_failure_is_500_deny(client, key, monkeypatch):
    from authz.adapters import nginx as nginx_adapter

    def broken(*args):
        raise KeyError("adapter bug")

    monkeypatch.setattr(nginx_adapter, "describe", broken)
    r = nginx(client, "/v1/orders", X_API_Key=key)
    assert (r.status_code, r.headers["X-Auth-Reason"]) == (500, "internal_error")
    assert r.get_json()["decision"] == "deny"
