"""Real nginx ``auth_request`` in front of authz (gunicorn, 2 workers) and an upstream.

The nginx configuration is the one in README.md, taken verbatim and only re-pointed
at this test's loopback ports. The upstream is a second nginx server block echoing
the identity headers it received (docs/proxies.md, "Testing against real proxies": a ``return`` in the protected
location would run before ``auth_request``)."""

import base64
import json
import re
import subprocess

import pytest
import requests

from authz.admin import Admin
from tests.conftest import ROOT, add_user, free_port, nginx_binary, propagated, start_nginx, write_policy

pytestmark = pytest.mark.both_stores

POLICY = json.loads((ROOT / "policies" / "api.json").read_text())
ECHO = ("principal=$http_x_auth_principal;user=$http_x_auth_user;client=$http_x_auth_client;"
        "methods=$http_x_auth_methods;scopes=$http_x_auth_scopes;uri=$request_uri")


def readme_nginx_block() -> str:
    text = (ROOT / "README.md").read_text()
    return re.search(r"```nginx\n(.*?)```", text, re.S).group(1)


@pytest.fixture
def stack(store, policy_dir, gunicorn, servers, tmp_path):
    write_policy(policy_dir, POLICY)
    authz = gunicorn(workers=2)
    port, upstream = free_port(), free_port()
    site = (readme_nginx_block()
            .replace("listen 80;", f"listen 127.0.0.1:{port};")
            .replace("127.0.0.1:8080", f"127.0.0.1:{authz.port}")
            .replace("127.0.0.1:9000", f"127.0.0.1:{upstream}"))
    assert f"127.0.0.1:{authz.port}" in site and f"127.0.0.1:{upstream}" in site
    upstream_site = f"""
    server {{
        listen 127.0.0.1:{upstream};
        location / {{ default_type text/plain; return 200 "{ECHO}"; }}
    }}"""
    server = start_nginx(servers, tmp_path, site + upstream_site, port)
    server.wait("/healthz")
    return server


def get(stack, path, method="GET", **headers):
    sent = {"Host": "api.example.com", **{k.replace("_", "-"): v for k, v in headers.items()}}
    return requests.request(method, stack.url + path, headers=sent, timeout=5)


def parse(body: str) -> dict:
    return dict(part.split("=", 1) for part in body.split(";"))


def test_allow_passes_the_principal_upstream(store, stack):
    _, key = Admin(store).keys.create("partner-a", ["orders:read"])
    r = get(stack, "/v1/orders/42?expand=1", X_API_Key=key)
    assert r.status_code == 200
    seen = parse(r.text)
    assert seen == {"principal": "partner-a", "user": "", "client": "partner-a", "methods": "api_key",
                    "scopes": "orders:read", "uri": "/v1/orders/42?expand=1"}


def test_client_cannot_forge_identity_headers(store, stack):
    _, key = Admin(store).keys.create("partner-a", ["orders:read"])
    r = get(stack, "/v1/orders", X_API_Key=key, X_Auth_User="root", X_Auth_Principal="root")
    assert parse(r.text)["principal"] == "partner-a" and parse(r.text)["user"] == ""
    r = get(stack, "/healthz", X_Auth_User="root")
    assert r.status_code == 200 and parse(r.text)["user"] == "" and parse(r.text)["methods"] == "anonymous"


def nginx_version() -> tuple[int, ...]:
    out = subprocess.run([nginx_binary(), "-v"], capture_output=True, text=True, check=True).stderr
    return tuple(int(x) for x in re.search(r"nginx/(\d+)\.(\d+)", out).groups())


def test_401_carries_the_challenges_to_the_client(stack):
    r = get(stack, "/v1/orders")
    assert r.status_code == 401
    challenges = r.raw.headers.getlist("WWW-Authenticate")
    everything = ['ApiKey realm="partners"', 'Basic realm="staff", charset="UTF-8"']
    # nginx before 1.23 copies only the first WWW-Authenticate of the auth response
    # (docs/proxies.md, "nginx": put first in the policy the scheme browsers should prompt for).
    assert challenges == (everything if nginx_version() >= (1, 23) else everything[:1])


def test_basic_and_all_combination(store, stack):
    add_user(store, "alice", "alice-pw", roles=["approver"])
    _, writer = Admin(store).keys.create("partner-w", ["orders:write"])
    auth = "Basic " + base64.b64encode(b"alice:alice-pw").decode()
    r = get(stack, "/v1/orders", "POST", X_API_Key=writer, Authorization=auth)
    assert r.status_code == 200
    assert parse(r.text) | {"uri": ""} == {"principal": "alice", "user": "alice", "client": "partner-w",
                                          "methods": "api_key,basic", "scopes": "orders:write", "uri": ""}
    r = get(stack, "/v1/orders", "POST", Authorization=auth)
    assert r.status_code == 401


def test_403_insufficient_scope_and_no_route(store, stack):
    _, reader = Admin(store).keys.create("partner-r", ["orders:read"])
    add_user(store, "alice", "alice-pw", roles=["approver"])
    auth = "Basic " + base64.b64encode(b"alice:alice-pw").decode()
    assert get(stack, "/v1/orders", "DELETE", X_API_Key=reader, Authorization=auth).status_code == 403
    assert get(stack, "/not/routed").status_code == 403


def test_wrong_credentials_and_revocation(store, stack):
    record, key = Admin(store).keys.create("partner-a", ["orders:read"])
    assert get(stack, "/v1/orders", X_API_Key=key[:-1] + ("A" if key[-1] != "A" else "B")).status_code == 401
    assert get(stack, "/v1/orders", X_API_Key=key).status_code == 200
    Admin(store).keys.revoke(record.id)
    refused = propagated(lambda: get(stack, "/v1/orders", X_API_Key=key), lambda r: r.status_code != 200)
    assert refused.status_code == 401


def test_path_tricks_are_normalised_or_refused(store, stack):
    add_user(store, "bob", "bob-pw", roles=["nobody"])
    auth = "Basic " + base64.b64encode(b"bob:bob-pw").decode()
    # /v1/orders/../../admin is /admin at the backend too: the admin route decides.
    r = requests.get(stack.url + "/v1/orders/%2e%2e/%2e%2e/admin/x", headers={"Authorization": auth}, timeout=5)
    assert r.status_code == 403
    r = requests.get(stack.url + "/v1/orders%2F..%2F..%2Fadmin", headers={"Authorization": auth}, timeout=5)
    assert r.status_code == 403
