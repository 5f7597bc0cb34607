"""CORS preflights (``"preflight": "allow"``): an OPTIONS with ``Origin`` and one
``Access-Control-Request-Method`` is allowed without credentials when the route that
would decide the announced request (the first matching it with the announced method)
says so, as ``X-Auth-Methods: preflight`` with no principal; everything else is decided
as before. The route index and the linear scan agree; explain, policy tests and
``policy check`` show it; real doors (nginx, Caddy, Envoy's HTTP and gRPC checks) pass
the preflight's headers."""

from __future__ import annotations

import itertools
import json
import time

import pytest
from click.testing import CliRunner

from authz.cli import main
from authz.decision import Reason
from authz.policy import preflight
from authz.policy.routes import RouteTable
from authz.request import CheckRequest
from tests.conftest import engine_for, write_policy
from tests.doors import DOORS, door_stack
from tests.idp import AUDIENCE, ISSUER, mint, public_pem, rsa_key
from tests.test_route_index import route

IDP = rsa_key()
# A day long: collected with the whole suite, the token must outlive the tests before it.
TOKEN = mint(IDP, kid=None, exp=int(time.time()) + 86400)
ORIGIN = "https://shop.example.com"
JWT = {"type": "jwt", "issuer": ISSUER, "audience": AUDIENCE, "algorithms": ["RS256"],
       "public_key_file": "idp.pem", "realm": "api"}
POLICY = {
    "authenticators": {"user_jwt": JWT, "public": {"type": "anonymous"}},
    "routes": [
        {"id": "orders-delete", "match": {"paths": ["/v1/orders/**"], "methods": ["DELETE"]}, "require": "user_jwt"},
        {"id": "orders", "match": {"paths": ["/v1/orders/**"], "methods": ["GET", "POST", "PUT"]},
         "require": "user_jwt", "preflight": "allow"},
        {"id": "users", "match": {"paths": ["/v1/users/**"]}, "require": "user_jwt", "preflight": "allow"},
        {"id": "reports-get", "match": {"paths": ["/v1/reports/**"], "methods": ["GET"]}, "require": "user_jwt"},
        {"id": "reports", "match": {"paths": ["/v1/reports/**"]}, "require": "user_jwt", "preflight": "allow"},
        {"id": "options", "match": {"paths": ["/v1/**"], "methods": ["OPTIONS"]}, "require": "user_jwt"},
    ]}


@pytest.fixture
def decide(store, policy_dir):
    (policy_dir / "idp.pem").write_bytes(public_pem(IDP))
    write_policy(policy_dir, POLICY)
    engine = engine_for(store, policy_dir)

    def decide(path="/v1/orders/7", announced="GET", origin=ORIGIN, method="OPTIONS", extra=()):
        headers = [(name, value) for name, value in (("Origin", origin), ("Access-Control-Request-Method", announced))
                   if value is not None]
        return engine.decide(CheckRequest.from_url(method, f"https://api.example.com{path}", [*headers, *extra]))

    return decide


def allowed_preflight(d, route):
    return (d.allowed, d.status, d.methods, d.identities, d.principal, d.route) == (True, 200, ["preflight"], [],
                                                                                   None, route)


@pytest.mark.parametrize(("path", "announced", "route"), [
    ("/v1/orders/7", "GET", "orders"),
    ("/v1/orders/7", "POST", "orders"),
    ("/v1/orders/7", "PUT", "orders"),
    ("/v1/users/bob", "PATCH", "users"),             # a route for every method: every announced method
    ("/v1/users/bob", "PURGE", "users"),
    ("/v1/reports/q1", "POST", "reports"),
])
def test_a_preflight_the_deciding_route_allows(decide, path, announced, route):
    assert allowed_preflight(decide(path, announced), route)


def test_a_trailing_slash_is_allowed_in_each_reading(decide):
    assert allowed_preflight(decide("/v1/orders/7/"), "orders")


@pytest.mark.parametrize(("why", "kwargs", "route"), [
    ("a plain OPTIONS", {"announced": None}, "options"),
    ("no Origin", {"origin": None}, "options"),
    ("an empty Origin", {"origin": ""}, "options"),
    ("several Origins", {"origin": f"{ORIGIN}, https://evil.example"}, "options"),
    ("several methods", {"announced": "GET, POST"}, "options"),
    ("not a token", {"announced": "G(E)T"}, "options"),
    ("an empty method", {"announced": ""}, "options"),
    ("a method the route does not take", {"announced": "PATCH"}, "options"),
    ("a lower-case method", {"announced": "get"}, "options"),
    ("the first matching route does not allow it", {"announced": "DELETE"}, "options"),
    ("an earlier route takes GET", {"path": "/v1/reports/q1", "announced": "GET"}, "reports"),
    ("no route takes the path", {"path": "/elsewhere"}, None),
    ("not OPTIONS", {"method": "GET"}, "orders"),
])
def test_everything_else_is_decided_as_before(decide, why, kwargs, route):
    d = decide(**kwargs)
    assert not d.allowed, why
    assert d.route == route
    assert d.reason in (Reason.CREDENTIALS_MISSING, Reason.NO_ROUTE)
    assert d.methods != ["preflight"]


def test_a_method_override_is_decided_in_its_own_reading(decide):
    d = decide(extra=[("X-HTTP-Method-Override", "DELETE")])
    assert (d.allowed, d.reason) == (False, Reason.CREDENTIALS_MISSING) and "read as DELETE" in d.detail


def test_credentials_are_not_needed_nor_read(decide):
    d = decide(extra=[("Authorization", f"Bearer {TOKEN}")])
    assert allowed_preflight(d, "orders")  # no principal even with one: a preflight carries none


def test_an_identity_token_on_a_preflight_names_no_subject(store, policy_dir):
    import jwt

    from authz.admin import Admin
    from authz.authenticators import Context
    from authz.engine import DecisionEngine
    from authz.engine.identity_token import IdentitySigner, keep_retired_for
    from authz.policy import load_policy

    Admin(store).signing_keys.rotate(keep_retired_for(60))
    (policy_dir / "idp.pem").write_bytes(public_pem(IDP))
    write_policy(policy_dir, {**POLICY, "routes": [{**POLICY["routes"][1], "identity_token": True}]})
    engine = DecisionEngine(load_policy(policy_dir, Context(store=store)), IdentitySigner(store, "https://authz"))
    d = engine.decide(CheckRequest.from_url("OPTIONS", "https://api.example.com/v1/orders/7",
                                            {"Origin": ORIGIN, "Access-Control-Request-Method": "GET"}))
    assert allowed_preflight(d, "orders")
    claims = jwt.decode(d.identity_token, options={"verify_signature": False})
    assert "sub" not in claims and claims["methods"] == ["preflight"] and claims["identities"] == []


def test_a_route_index_and_the_linear_scan_pick_the_same_deciding_route():
    table = [route(n, paths, hosts, methods) for n, (paths, hosts, methods) in enumerate([
        (["/v1/orders/**"], ["api.example.com"], ["DELETE"]),
        (["/v1/orders/**"], ["*.example.com"], ["GET", "POST"]),
        (["/v1/**"], None, None),
        (["/files/*.png"], None, ["PUT"]),
        (None, ["*.internal.example.com"], None),
        (["/**"], None, ["OPTIONS"]),
    ])]
    for r in table:
        r.options = {"preflight": "allow"} if r.index % 2 else {}
    indexed, linear = RouteTable(table, linear_up_to=0), RouteTable(table, linear_up_to=1000)
    assert not indexed.linear and linear.linear
    hosts = ["api.example.com", "eu.example.com", "db.internal.example.com", "h"]
    paths = ["/v1/orders/7", "/v1/x", "/files/a.png", "/other"]
    methods = ["GET", "POST", "DELETE", "PUT", "PATCH", "OPTIONS"]
    seen = set()
    for host, path, method in itertools.product(hosts, paths, methods):
        request = CheckRequest.build("OPTIONS", path, host, headers={"Origin": ORIGIN,
                                                                     "Access-Control-Request-Method": method})
        one, other = preflight.deciding_route(indexed, request), preflight.deciding_route(linear, request)
        assert (one[0], one[1] and one[1].id) == (other[0], other[1] and other[1].id)
        seen.add(preflight.allows(one[1]))
    assert seen == {True, False}


def test_explain_shows_which_route_decided_the_preflight(store, policy_dir):
    (policy_dir / "idp.pem").write_bytes(public_pem(IDP))
    write_policy(policy_dir, POLICY)

    def explain(announced, *more):
        args = ["--db", store.url, "policy", "explain", "OPTIONS", "https://api.example.com/v1/orders/7",
                "--policy-dir", str(policy_dir), "-H", f"Origin: {ORIGIN}",
                "-H", f"Access-Control-Request-Method: {announced}", *more]
        return CliRunner().invoke(main, args)

    text = explain("GET").output
    assert "preflight: OPTIONS announcing GET: route orders (\"preflight\": \"allow\") lets it through" in text
    assert "→ orders" in text and "skipped: method GET not in ['DELETE']" in text
    assert "decision: ALLOW (200) a CORS preflight, without credentials, on route orders" in text
    text = explain("DELETE").output
    assert "route orders-delete does not allow preflights; decided as a plain OPTIONS" in text
    assert "→ options" in text and "DENY (401 credentials_missing)" in text
    text = explain("PATCH").output
    assert "no route takes PATCH here; decided as a plain OPTIONS" in text
    answer = json.loads(explain("GET", "--json").output)
    assert answer["methods"] == ["preflight"] and answer["principal"] is None
    assert answer["explain"]["preflight"] == {"method": "GET", "route": "orders", "allowed": True}


def test_policy_tests_can_expect_a_preflight(store, policy_dir, tmp_path):
    (policy_dir / "idp.pem").write_bytes(public_pem(IDP))
    write_policy(policy_dir, POLICY)
    preflight_request = {"method": "OPTIONS", "url": "https://api.example.com/v1/orders/7",
                         "headers": {"Origin": ORIGIN, "Access-Control-Request-Method": "GET"}}
    cases = tmp_path / "cases.json"
    cases.write_text(json.dumps({"cases": [
        {"name": "the shop's preflight", "request": preflight_request,
         "expect": {"decision": "allow", "methods": ["preflight"], "principal": None, "route": "orders"}},
        {"name": "wrongly expected", "request": {**preflight_request, "headers": {"Origin": ORIGIN}},
         "expect": {"methods": ["preflight"]}},
    ]}))
    result = CliRunner().invoke(main, ["--db", store.url, "policy", "test", str(cases), "--policy-dir",
                                       str(policy_dir)])
    assert "the shop's preflight" in result.output and "methods: expected ['preflight'], got []" in result.output
    assert result.exit_code == 1
    assert "1 passed, 1 failed" in result.output or "1 failed" in result.output


def test_policy_check_warns_on_a_preflight_route_for_options_only(policy_dir):
    write_policy(policy_dir, {"authenticators": {"public": {"type": "anonymous"}},
                              "routes": [{"id": "pre", "match": {"methods": ["OPTIONS"]}, "require": "public",
                                          "preflight": "allow"}]})
    result = CliRunner().invoke(main, ["policy", "check", str(policy_dir)])
    assert "/routes/0/preflight" in result.output and "matches OPTIONS only" in result.output
    write_policy(policy_dir, POLICY)
    (policy_dir / "idp.pem").write_bytes(public_pem(IDP))
    assert "preflight" not in CliRunner().invoke(main, ["policy", "check", str(policy_dir)]).output


@pytest.mark.parametrize("value", ["deny", True, "ALLOW"])
def test_the_schema_takes_allow_only(store, policy_dir, value):
    from authz.policy import PolicyError

    (policy_dir / "idp.pem").write_bytes(public_pem(IDP))
    write_policy(policy_dir, {**POLICY, "routes": [{**POLICY["routes"][1], "preflight": value}]})
    with pytest.raises(PolicyError, match="preflight"):
        engine_for(store, policy_dir)


# -- real doors ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory, new_store):
    with door_stack(tmp_path_factory, new_store, "preflight-doors",
                    {"idp.pem": public_pem(IDP), "policy.json": POLICY}) as started:
        yield started


@pytest.mark.both_stores
@pytest.mark.parametrize("door", list(DOORS))
def test_a_preflight_through_every_door(stack, door):
    via = DOORS[door]
    asking = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    assert via(stack, "OPTIONS", "/v1/orders/7", asking) == (200, None, "preflight")
    assert via(stack, "OPTIONS", "/v1/orders/7", {"Origin": ORIGIN})[0] == 401             # a plain OPTIONS
    assert via(stack, "OPTIONS", "/v1/orders/7", {**asking, "Access-Control-Request-Method": "DELETE"})[0] == 401
    assert via(stack, "POST", "/v1/orders/7", asking)[0] == 401                             # not a preflight
    assert via(stack, "POST", "/v1/orders/7", {"Authorization": f"Bearer {TOKEN}"}) == (200, "alice", "jwt")
