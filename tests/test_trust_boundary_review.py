"""A hostile review's findings, kept as tests: lower-case methods and encoded overrides
through Caddy and nginx, HEAD and trailing slashes, routing headers reaching the API, and
ingress-nginx's auth location (rebuilt from its nginx.tmpl around the auth-snippet of
deploy/ingress-nginx/ingress.yaml, since ingress-nginx itself cannot run here).

Every test states the property that must hold; a catch-all route ("any valid key")
follows the protected ones, the common shape that makes a missed route an allow.
"""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import ROOT, free_port
from tests.pki import Pki
from tests.test_trust_boundary import (
    listing,
    make_store,
    start_authz,
    start_doors,
    trust_policy,
)
from tests.upstreams import FlaskUpstream, RawEcho, build_request, raw_http, start_nginx_at, wait_listening

pytestmark = pytest.mark.both_stores


def review_policy() -> dict:
    policy = trust_policy()
    # A common shape: method-split routes first, then "any valid key" for the rest.
    policy["routes"].append({"id": "default", "match": {"paths": ["/**"]}, "require": "key"})
    return policy


# ingress-nginx's generated auth location (nginx.tmpl): X-Original-URL from $http_host,
# plus the auth-snippet of deploy/ingress-nginx/ingress.yaml.
INGRESS_SITE = """
server {{
    listen 127.0.0.1:{port} default_server;
    server_name _;
    return 404;
}}
server {{
    listen 127.0.0.1:{port};
    server_name api.example.com;
    location / {{
        auth_request /_external-auth;
        proxy_pass http://127.0.0.1:{upstream};
    }}
    location = /_external-auth {{
        internal;
        proxy_pass http://127.0.0.1:{authz}/auth-request;
        proxy_pass_request_body off;
        proxy_set_header Content-Length "";
        proxy_set_header X-Forwarded-Proto "";
{method_lines}
        proxy_set_header X-Original-URL $scheme://$http_host$request_uri;
        proxy_set_header X-Original-Method $request_method;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header X-Forwarded-For $remote_addr;
        proxy_set_header X-Auth-Request-Redirect $request_uri;
        # deploy/ingress-nginx/ingress.yaml auth-snippet
{snippet}
    }}
}}
"""


def ingress_snippet() -> str:
    annotations = yaml.safe_load((ROOT / "deploy" / "ingress-nginx" / "ingress.yaml").read_text())["metadata"][
        "annotations"]
    lines = annotations["nginx.ingress.kubernetes.io/auth-snippet"].splitlines()
    return "\n".join("        " + line for line in lines).replace("{", "{{").replace("}", "}}")


INGRESS_METHOD_LINES = """
        proxy_method GET;
        proxy_set_header X-Original-URI $request_uri;
        proxy_set_header X-Scheme $scheme;
        proxy_set_header Host authz.authz.svc.cluster.local;
"""


@pytest.fixture(scope="module")
def rstack(tmp_path_factory, new_store):
    tmp = tmp_path_factory.mktemp("review")
    pki = Pki()
    store, policy_dir, creds = make_store(new_store, tmp, pki, review_policy())
    echo, flask = RawEcho(), FlaskUpstream()
    started = []
    try:
        authz = start_authz(tmp, store, policy_dir)
        started.append(authz)
        authz.wait()
        doors, servers = start_doors(tmp, authz.port, {"raw": echo.port, "flask": flask.port})
        started.extend(servers)
        iport = free_port()
        started.append(start_nginx_at(tmp / "ingress", INGRESS_SITE.format(
            port=iport, upstream=flask.port, authz=authz.port, method_lines="",
            snippet=ingress_snippet()).replace("{{", "{").replace("}}", "}"), iport))
        # what ingress-nginx generates for the shipped annotations (auth-method: GET)
        gport = free_port()
        started.append(start_nginx_at(tmp / "ingress-get", INGRESS_SITE.format(
            port=gport, upstream=flask.port, authz=authz.port, method_lines=INGRESS_METHOD_LINES,
            snippet=ingress_snippet()).replace("{{", "{").replace("}}", "}"), gport))
        wait_listening(started[1:])
        yield {"creds": creds, "echo": echo, "flask": flask, "doors": doors, "ingress": iport,
               "ingress_get": gport, "authz": authz}
    finally:
        for server in reversed(started):
            server.stop()
        echo.stop()
        flask.stop()
        new_store.discard(store)


@pytest.mark.parametrize("method", ["post", "Post"])
def test_lowercase_method_does_not_reach_a_handler_authz_never_allowed(rstack, method):
    """Caddy (Go) forwards `post` as sent; authz matches it as sent (no POST route, so the
    catch-all); werkzeug upper-cases it and runs the POST-only approve handler."""
    flask = rstack["flask"]
    failures = {}
    for name, door in rstack["doors"].items():
        if door.upstream != "flask":
            continue
        mark = flask.mark()
        r = door.send(method, "/v1/orders/42:approve", [("X-API-Key", rstack["creds"]["rw"])])
        ran = [(x.handler, x.method) for x in flask.since(mark)]
        if any(h == "APPROVE-HANDLER" for h, _ in ran):
            failures[name] = (r.status, ran)
    assert not failures, listing(failures)


@pytest.mark.parametrize("query", ["_m%65thod=DELETE", "%5f%6d%65%74%68%6f%64=DELETE", "_%6Dethod=DELETE"])
def test_encoded_method_override_parameter_counts(rstack, query):
    """`?_method=` counts as an override (docs/contract.md, "Every reading must be
    allowed"); an encoded spelling of the name is the same parameter for every query
    parser (Express qs, PHP, Symfony)."""
    echo = rstack["echo"]
    failures = {}
    for name, door in rstack["doors"].items():
        if door.upstream != "raw":
            continue
        mark = echo.mark()
        # orders-write allows POST for rw; DELETE on /v1/orders/42 -> only the catch-all;
        # use the admin tree: POST /static/x is not allowed, GET is.
        r = door.send("GET", f"/static/x?{query}")
        if r.status == 200 and echo.since(mark):
            failures[name] = (r.status, "allowed although the override DELETE is not allowed on static")
    assert not failures, listing(failures)


@pytest.mark.parametrize(("target", "host"), [
    ("http://api.example.com/admin/x", "docs.example.com"),   # nginx routes by the request line
])
def test_ingress_host_from_http_host(rstack, target, host):
    """ingress-nginx builds X-Original-URL from $http_host: the Host header, not the host
    nginx routed by. authz must not decide for docs.example.com what api.example.com serves."""
    flask = rstack["flask"]
    mark = flask.mark()
    r = raw_http(rstack["ingress"], build_request("GET", target, (), host))
    ran = [x.handler for x in flask.since(mark)]
    assert "ADMIN-HANDLER" not in ran, (r.status, ran, r.text[:100])


def test_ingress_query_in_host(rstack):
    """`Host: api.example.com?` + absolute-form: X-Original-URL = http://api.example.com?/admin/x,
    which authz reads as path '/' and query '/admin/x'."""
    flask = rstack["flask"]
    mark = flask.mark()
    r = raw_http(rstack["ingress"], build_request("GET", "http://api.example.com/admin/x", (), "api.example.com?"))
    ran = [(x.handler, x.path) for x in flask.since(mark)]
    # the catch-all "default" (any key) decides '/', so without a key this is a 401 either way;
    # with the rw key (no admin scope) the admin handler must not run.
    mark = flask.mark()
    r2 = raw_http(rstack["ingress"], build_request("GET", "http://api.example.com/admin/x",
                                                   [("X-API-Key", rstack["creds"]["rw"])], "api.example.com?"))
    ran2 = [(x.handler, x.path) for x in flask.since(mark)]
    assert not any(h == "ADMIN-HANDLER" for h, _ in ran2), (r.status, ran, r2.status, ran2)


def test_shipped_ingress_keeps_host_scoped_routes(rstack):
    """With the shipped annotations (auth-method: GET) ingress-nginx sends X-Original-URI
    and Host: <authz service>; the auth-snippet must name the host nginx routed by, or
    authz decides for the service's host, skips the api.example.com-only admin route and
    lets the catch-all allow a key without the admin scope."""
    flask = rstack["flask"]
    mark = flask.mark()
    r = raw_http(rstack["ingress_get"], build_request("GET", "/admin/x", [("X-API-Key", rstack["creds"]["rw"])]))
    ran = [x.handler for x in flask.since(mark)]
    assert "ADMIN-HANDLER" not in ran, (r.status, ran)


def test_head_is_not_a_way_around_a_get_only_route(rstack):
    """orders-read is GET-only (orders:read). HEAD skips it and lands on the catch-all (any
    key); Flask, Django, Express, Go and Spring all run the GET handler for HEAD."""
    flask = rstack["flask"]
    failures = {}
    for name, door in rstack["doors"].items():
        if door.upstream != "flask":
            continue
        mark = flask.mark()
        r = door.send("HEAD", "/v1/orders/42", [("X-API-Key", rstack["creds"]["admin"])])  # no orders:read
        ran = [(x.handler, x.method) for x in flask.since(mark)]
        if ran:
            failures[name] = (r.status, ran)
    assert not failures, listing(failures)



REWRITE_HEADERS = [("X-Original-URL", "/admin/x"), ("X-Rewrite-URL", "/admin/x"), ("X-Original-URI", "/admin/x"),
                   ("X-Forwarded-Uri", "/admin/x"), ("X-Forwarded-Prefix", "/admin"),
                   ("Forwarded", "host=docs.example.com"), ("X-Forwarded-Host", "docs.example.com")]


def test_path_rewriting_headers_do_not_reach_the_upstream(rstack):
    """Symfony < 4.1.3 / Zend / IIS URL Rewrite read X-Original-URL / X-Rewrite-URL as the
    path to route (CVE-2018-14773): authz decided /static/x, such an upstream serves /admin/x."""
    echo = rstack["echo"]
    failures = {}
    for name, door in rstack["doors"].items():
        if door.upstream != "raw":
            continue
        mark = echo.mark()
        r = door.send("GET", "/static/x", REWRITE_HEADERS)
        for rec in echo.since(mark):
            leaked = [(k, rec.values(k)) for k, _ in REWRITE_HEADERS if rec.values(k)]
            if any(k.lower() in ("x-original-url", "x-rewrite-url", "x-original-uri") for k, _ in leaked):
                failures[name] = (r.status, leaked)
    assert not failures, listing(failures)


# Case-insensitive routing (Express's default, ASP.NET) is not covered: authz matches paths
# case-sensitively, and an upstream that folds case must not be put behind case-sensitive
# routes (docs/contract.md, "Matching").
@pytest.mark.parametrize(("method", "target"), [("POST", "/v1/orders/42:approve/"), ("GET", "/admin/x")])
def test_trailing_slash_does_not_leave_the_protected_route(rstack, method, target):
    """Rails, Laravel, Express (non-strict), Spring MVC < 6 and ASP.NET Core route
    '/v1/orders/42:approve/' to the approve action: the request must be allowed as
    '/v1/orders/42:approve' too. (GET /admin/x is a control: denied for the rw key.)"""
    echo = rstack["echo"]
    failures = {}
    for name, door in rstack["doors"].items():
        if door.upstream != "raw":
            continue
        mark = echo.mark()
        r = door.send(method, target, [("X-API-Key", rstack["creds"]["rw"])])
        if r.status == 200 and echo.since(mark):
            failures[name] = (r.status, [x.target for x in echo.since(mark)])
    assert not failures, listing(failures)
