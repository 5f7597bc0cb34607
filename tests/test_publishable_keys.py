"""Publishable API keys (``pk_live_…`` / ``pk_test_…``): origins read strictly, read-only
by construction, taken only by a ``"publishable": true`` authenticator — through the
engine, the CLI, a store from before them, and real servers."""

from __future__ import annotations

import http.client
import ipaddress
import json
import sqlite3
import subprocess

import pytest
import requests
from click.testing import CliRunner

from authz.admin import Admin
from authz.authenticators import Context
from authz.cli import main
from authz.credentials import apikeys, origins
from authz.decision import Reason
from authz.policy import load_policy, read_policy_dir
from authz.policy.lint import warnings
from authz.policy.writing import writing_scopes
from authz.request import CheckRequest
from authz.store import StoreError, open_store
from tests.conftest import BIN, engine_for, explain_json, write_policy

pytestmark = pytest.mark.both_stores

SHOP = "https://shop.example.com"
POLICY = {
    "authenticators": {"browser": {"type": "api_key", "publishable": True},
                       "partner": {"type": "api_key"}},
    "routes": [
        {"id": "catalog", "match": {"paths": ["/v1/catalog/**"], "methods": ["GET", "HEAD"]},
         "require": {"any": [{"use": "browser", "scopes": ["catalog:read"]},
                             {"use": "partner", "scopes": ["catalog:read"]}]}},
        {"id": "catalog-write", "match": {"paths": ["/v1/catalog/**"], "methods": ["POST", "PUT", "DELETE"]},
         "require": {"any": [{"use": "browser", "scopes": ["catalog:write"]},
                             {"use": "partner", "scopes": ["catalog:write"]}]}},
        {"id": "cart", "match": {"paths": ["/v1/cart"]}, "require": "browser"},
        {"id": "orders", "match": {"paths": ["/v1/orders"]}, "require": "partner"},
    ],
}


@pytest.fixture
def keys(store, policy_dir):
    """A publishable key for the shop's origins, and a partner's secret key."""
    write_policy(policy_dir, POLICY)
    writing = writing_scopes(load_policy(policy_dir, Context(store=store)))
    admin = Admin(store).keys
    pk_record, pk = admin.create("web-shop", ["catalog:read"], publishable=True,
                                 origins=[SHOP, "https://*.example.com:8443", "http://localhost:3000"],
                                 writing_scopes=writing)
    _, sk = admin.create("partner-a", ["catalog:read", "catalog:write"])
    return {"pk": pk, "pk_id": pk_record.id, "sk": sk}


@pytest.fixture
def decide(store, policy_dir, keys):
    engine = engine_for(store, policy_dir)

    def decide(key: str, origin: str | list[str] | None = SHOP, method: str = "GET", path: str = "/v1/catalog/7",
               headers: dict | None = None, client_ip: str = "198.51.100.7"):
        sent = [("X-API-Key", key)]
        for value in [origin] if isinstance(origin, str) else origin or []:
            sent.append(("Origin", value))
        sent += list((headers or {}).items())
        return engine.decide(CheckRequest.build(method, path, "api.example.com", headers=sent,
                                                client_ip=ipaddress.ip_address(client_ip)))

    return decide


# -- origins ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("written", "stored"), [
    ("https://shop.example.com", "https://shop.example.com"),
    ("HTTPS://Shop.Example.COM", "https://shop.example.com"),
    ("https://*.example.com", "https://*.example.com"),
    ("https://shop.example.com:8443", "https://shop.example.com:8443"),
    ("http://localhost:3000", "http://localhost:3000"),
    ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
    ("https://[2001:db8::1]", "https://[2001:db8::1]"),
    ("https://xn--bcher-kva.example", "https://xn--bcher-kva.example"),
])
def test_allowed_origins_are_stored_as_browsers_send_them(written, stored):
    assert origins.check_allowed(written) == stored


@pytest.mark.parametrize(("written", "why"), [
    ("https://shop.example.com/", "no path, query or fragment (write https://shop.example.com)"),
    ("https://shop.example.com/app?x=1", "no path"),
    ("shop.example.com", "not scheme://host[:port]"),
    ("https://shop.example.com:443", "default port 443"),
    ("https://shop.example.com:08443", "without leading zeros"),
    ("https://shop.example.com:70000", "from 1 to 65535"),
    ("https://user@shop.example.com", "userinfo"),
    ("https://shop.example.com.", "ends with a dot"),
    ("null", "opaque origin"),
    ("https://a.example.com https://b.example.com", "several values"),
    ("http://shop.example.com", "only for loopback hosts"),
    ("ftp://shop.example.com", "scheme 'ftp'"),
    ("https://*.com", "at least two labels"),
    ("http://*.localhost", "must be https"),
    ("https://shop.*.example.com", "whole first label"),
    ("https://*shop.example.com", "whole first label"),
    ("https://127.1", "dotted-quad"),
    ("https://0x7f.0.0.1", "dotted-quad"),
    ("https://[0:0::1]", "[::1]"),
    ("https://bücher.example", "xn--"),
    ("https://shop_1.example.com", "DNS name"),
])
def test_bad_origins_say_why(written, why):
    with pytest.raises(origins.OriginError) as caught:
        origins.check_allowed(written)
    assert why in str(caught.value)


def test_a_wildcard_stands_for_exactly_one_label_scheme_and_port_included():
    allowed = origins.allowed("https://*.example.com https://shop.example.org")
    assert origins.parse("https://a.example.com") in allowed
    assert origins.parse("HTTPS://A.EXAMPLE.COM") in allowed
    for other in ("https://example.com", "https://a.b.example.com", "https://a.example.com:8443",
                  "http://a.example.com", "https://a.example.com.evil.net", "https://aexample.com",
                  "https://shop.example.org:444"):
        assert origins.parse(other) not in allowed, other


# -- decisions ---------------------------------------------------------------------------------------

def test_allowed_origin(keys, decide):
    d = decide(keys["pk"])
    assert d.allowed and d.route == "catalog"
    identity = d.principal
    assert (identity.id, identity.kind, identity.method, identity.authenticator, identity.credential) == (
        "web-shop", "client", "api_key", "browser", keys["pk_id"])
    assert identity.scopes == {"catalog:read"} and identity.roles == frozenset()
    assert decide(keys["pk"], "HTTPS://SHOP.EXAMPLE.COM").allowed  # compared ASCII-lower-cased
    assert decide(keys["pk"], "http://localhost:3000").allowed
    assert decide(keys["pk"], method="HEAD").allowed and decide(keys["pk"], method="OPTIONS",
                                                                  path="/v1/cart").allowed


def test_wildcard_origin(keys, decide):
    assert decide(keys["pk"], "https://eu.example.com:8443").allowed
    for other in ("https://eu.example.com", "https://a.eu.example.com:8443", "https://example.com:8443"):
        d = decide(keys["pk"], other)
        assert (d.status, d.reason) == (403, Reason.PRINCIPAL_NOT_ALLOWED), other


def test_foreign_origin(keys, decide):
    d = decide(keys["pk"], "https://evil.example.net")
    assert (d.status, d.reason, d.route) == (403, Reason.PRINCIPAL_NOT_ALLOWED, "catalog")
    assert d.detail == f"publishable API key {keys['pk_id']} may not be used from origin https://evil.example.net"
    assert d.challenges == []


def test_no_origin(keys, decide):
    d = decide(keys["pk"], None)
    assert (d.status, d.reason) == (403, Reason.PRINCIPAL_NOT_ALLOWED)
    assert d.detail == (f"publishable API key {keys['pk_id']} is accepted only from its browser origins, "
                        "and the request has no Origin header")


@pytest.mark.parametrize(("origin", "why"), [
    ("null", "opaque origin"),
    ([SHOP, SHOP], "several values"),  # two Origin headers
    ([SHOP, "https://evil.example.net"], "several values"),
    (f"{SHOP}, https://evil.example.net", "several values"),
    ("https://user@shop.example.com", "userinfo"),
    ("https://shop.example.com.", "ends with a dot"),
    ("https://shop.example.com:443", "default port"),
    ("https://shop.example.com/", "no path"),
    ("", "empty"),
])
def test_origins_two_parsers_could_read_differently_are_refused(keys, decide, origin, why):
    d = decide(keys["pk"], origin)
    assert (d.status, d.reason) == (403, Reason.PRINCIPAL_NOT_ALLOWED)
    assert d.detail.startswith(f"publishable API key {keys['pk_id']}: the request's Origin is refused: ")
    assert why in d.detail


def test_write_route_refused(keys, decide):
    for method in ("POST", "PUT", "DELETE"):
        d = decide(keys["pk"], method=method)
        assert (d.status, d.reason, d.route) == (403, Reason.PRINCIPAL_NOT_ALLOWED, "catalog-write")
        assert d.detail == f"publishable API key {keys['pk_id']} is read-only: {method} is not GET, HEAD or OPTIONS"
    # A route open to every method that asks no scope at all: still read-only.
    assert decide(keys["pk"], path="/v1/cart").allowed
    d = decide(keys["pk"], method="POST", path="/v1/cart")
    assert (d.status, d.reason) == (403, Reason.PRINCIPAL_NOT_ALLOWED) and "read-only" in d.detail
    # Nor as another reading of a GET (a method override).
    d = decide(keys["pk"], path="/v1/cart", headers={"X-HTTP-Method-Override": "DELETE"})
    assert (d.status, d.reason) == (403, Reason.PRINCIPAL_NOT_ALLOWED)
    assert d.detail.startswith("read as DELETE /v1/cart: ") and "read-only" in d.detail
    # The partner's secret key writes as before.
    assert decide(keys["sk"], None, method="POST").allowed


def test_secret_key_to_a_publishable_authenticator(keys, decide):
    d = decide(keys["sk"], path="/v1/cart")
    assert (d.status, d.reason) == (401, Reason.CREDENTIALS_INVALID)
    assert d.detail == ('the credential in the X-API-Key header is not accepted on route cart: a secret key '
                        '(sk_) is not taken by a "publishable" authenticator: it must never reach a browser')
    assert d.challenges == ['ApiKey realm="browser"']


def test_publishable_key_to_a_secret_key_authenticator(keys, decide):
    d = decide(keys["pk"], path="/v1/orders")
    assert (d.status, d.reason) == (401, Reason.CREDENTIALS_INVALID)
    assert d.detail == ('the credential in the X-API-Key header is not accepted on route orders: a publishable '
                        'key (pk_): only an api_key authenticator with "publishable": true takes it')


def test_one_route_takes_both_kinds_each_by_its_own_authenticator(keys, decide):
    assert decide(keys["pk"]).principal.authenticator == "browser"
    assert decide(keys["sk"], None).principal.authenticator == "partner"


def test_the_checks_of_every_key_still_apply(store, keys, decide, tmp_path):
    record, pk = Admin(store).keys.create("kiosk", publishable=True, origins=[SHOP], allow_ips=["203.0.113.0/24"])
    assert decide(pk, path="/v1/cart", client_ip="203.0.113.9").allowed
    d = decide(pk, path="/v1/cart")
    assert (d.status, d.reason) == (401, Reason.IP_NOT_ALLOWED)
    Admin(store).keys.revoke(record.id)
    assert decide(pk, path="/v1/cart", client_ip="203.0.113.9").reason == Reason.CREDENTIAL_REVOKED
    live_only = {**POLICY, "authenticators": {**POLICY["authenticators"],
                                              "browser": {"type": "api_key", "publishable": True,
                                                          "environments": ["live"]}}}
    write_policy(tmp_path / "live", live_only)
    _, test_key = Admin(store).keys.create("web-shop", env="test", publishable=True, origins=[SHOP])
    d = engine_for(store, tmp_path / "live").decide(CheckRequest.build(
        "GET", "/v1/cart", "h", headers={"X-API-Key": test_key, "Origin": SHOP}))
    assert (d.reason, d.detail) == (Reason.CREDENTIALS_INVALID, "test keys are not accepted here")


def test_last_use_is_recorded_only_when_allowed(store, keys, decide):
    assert not decide(keys["pk"], "https://evil.example.net").allowed
    store.last_used.flush()
    assert Admin(store).keys.get(keys["pk_id"]).last_used_at is None
    assert decide(keys["pk"]).allowed
    store.last_used.flush()
    assert Admin(store).keys.get(keys["pk_id"]).last_used_at is not None


# -- which scopes write --------------------------------------------------------------------------------

def test_writing_scopes_come_from_the_routes(store, policy_dir):
    write_policy(policy_dir, {**POLICY, "routes": [
        *POLICY["routes"],
        {"id": "reports", "match": {"paths": ["/v1/reports/**"]},
         "require": {"all": [{"use": "partner", "scopes": ["reports:read"]}]}},
        {"id": "search", "match": {"paths": ["/v1/search"], "methods": ["GET", "POST"]},
         "require": {"use": "browser", "scopes": ["search"]}},
    ]})
    found = writing_scopes(load_policy(policy_dir, Context(store=store)))
    assert set(found) == {"catalog:write", "reports:read", "search"}  # catalog:read: GET and HEAD only
    assert found["catalog:write"].startswith("route 'catalog-write' in ") and found["catalog:write"].endswith(
        "requires it and admits DELETE, POST, PUT")
    assert found["reports:read"].endswith("admits every method") and found["search"].endswith("admits POST")


def test_policy_check_warns_of_a_publishable_key_on_a_route_open_to_writes(store, policy_dir):
    write_policy(policy_dir, POLICY)
    source = read_policy_dir(policy_dir)
    found = [str(w) for w in warnings(source, load_policy(policy_dir, Context(store=store)))]
    assert [w for w in found if "publishable" in w] == [
        f"{policy_dir / 'policy.json'}: /routes/1: route 'catalog-write' admits DELETE, POST, PUT, where "
        "publishable keys (browser) are refused: they are read-only (GET, HEAD, OPTIONS); if the route only "
        "reads, list its methods",
        f"{policy_dir / 'policy.json'}: /routes/2: route 'cart' admits every method, where publishable keys "
        "(browser) are refused: they are read-only (GET, HEAD, OPTIONS); if the route only reads, list its methods"]


def test_the_schema_declares_the_option(store, policy_dir):
    from authz.policy import PolicyError

    write_policy(policy_dir, {"authenticators": {"b": {"type": "api_key", "publishable": "yes"}},
                              "routes": [{"id": "r", "require": "b"}]})
    with pytest.raises(PolicyError, match="publishable"):
        load_policy(policy_dir, Context(store=store))


# -- the command line ----------------------------------------------------------------------------------

@pytest.fixture
def cli(store, policy_dir):
    write_policy(policy_dir, POLICY)

    def cli(*args, ok=True):
        result = CliRunner().invoke(main, ["--db", store.url, "keys", "create", "--principal", "web-shop",
                                           "--policy-dir", str(policy_dir), *args])
        assert (result.exit_code == 0) == ok, result.output
        return result.output

    return cli


def test_cli_creates_a_publishable_key(store, cli):
    out = cli("--publishable", "--origin", SHOP, "--origin", "https://*.example.com", "--scope", "catalog:read",
              "--env", "test")
    key = next(line for line in out.splitlines() if line.startswith("pk_test_"))
    assert apikeys.parse(key) == "test" and "not secret" in out and "origins: https://shop.example.com" in out
    listed = json.loads(CliRunner().invoke(main, ["--db", store.url, "keys", "list", "--json"]).output)
    assert [(k["publishable"], k["origins"], k["scopes"]) for k in listed] == [
        (True, [SHOP, "https://*.example.com"], ["catalog:read"])]
    assert key not in json.dumps(listed)
    created = json.loads(cli("--publishable", "--origin", SHOP, "--json"))
    assert created["key"].startswith("pk_live_") and created["publishable"] is True


@pytest.mark.parametrize(("args", "line"), [
    (["--publishable", "--origin", "https://shop.example.com/"],
     "Error: invalid origin 'https://shop.example.com/': an origin has no path, query or fragment "
     "(write https://shop.example.com)"),
    (["--publishable", "--origin", "https://*.com", "--scope", "catalog:read"],
     "Error: invalid origin 'https://*.com': a wildcard needs at least two labels after '*.' "
     "(https://*.example.com)"),
    (["--publishable", "--origin", "null"],
     "Error: invalid origin 'null': 'null' is the opaque origin of sandboxed frames, file: pages and redirects: "
     "it names no site"),
    (["--publishable"], "Error: a publishable key needs at least one origin it may be used from "
                        "(e.g. https://app.example.com)"),
    (["--origin", SHOP], "Error: origins restrict publishable keys only: create a publishable key to use them"),
    (["--publishable", "--origin", SHOP, "--scope", "catalog:read", "--scope", "catalog:write"],
     "Error: scope 'catalog:write' writes (route 'catalog-write' in {policy} requires it and admits DELETE, "
     "POST, PUT) and a publishable key is read-only: grant it a scope that only routes limited to GET, HEAD or "
     "OPTIONS require"),
])
def test_cli_bad_input_is_one_line_and_writes_nothing(store, policy_dir, cli, args, line):
    out = cli(*args, ok=False)
    assert out.strip() == line.format(policy=policy_dir / "policy.json")
    assert Admin(store).keys.list() == []


def test_cli_refuses_scopes_it_cannot_check(store, tmp_path, cli):
    out = cli("--publishable", "--origin", SHOP, "--scope", "catalog:read", "--policy-dir", str(tmp_path / "none"),
              ok=False)
    assert out.strip() == (f"Error: cannot tell which scopes write: the policy does not load: {tmp_path / 'none'}: "
                           "policy directory not found; give --policy-dir")
    assert Admin(store).keys.list() == []


def test_policy_explain_as_a_publishable_key(store, policy_dir, keys):
    def explain(*headers):
        return explain_json(store, policy_dir, "GET", "https://api.example.com/v1/catalog/1", headers,
                            "--as-key", keys["pk_id"])

    assert explain(f"Origin: {SHOP}")["decision"] == "allow"
    assert explain()["reason"] == "principal_not_allowed"


# -- a store from before publishable keys ------------------------------------------------------------------

def _before_publishable(migrations: list[list[str]]) -> int:
    """How many migrations a store had before the one adding publishable keys (later
    migrations are appended after it)."""
    return next(n for n, migration in enumerate(migrations) if any("publishable" in s for s in migration))


def _old_sqlite_store(path) -> None:
    from authz.store.sqlite.migrations import MIGRATIONS

    version = _before_publishable(MIGRATIONS)
    with sqlite3.connect(path) as db:
        for migration in MIGRATIONS[:version]:
            for statement in migration:
                db.execute(statement)
        db.execute("INSERT INTO principals (name, kind, created_at, updated_at) VALUES ('partner-a', 'client', 1, 1)")
        db.execute("INSERT INTO api_keys (id, principal_id, hash, display, env, created_at) "
                   "VALUES ('key_old', 1, ?, 'sk_live_…', 'live', 1)", (apikeys.fingerprint(OLD_KEY),))
        db.execute(f"PRAGMA user_version = {version}")
    db.close()


def _old_postgresql_store(url) -> None:
    import psycopg

    from authz.store.postgres.migrations import MIGRATIONS

    version = _before_publishable(MIGRATIONS)
    with psycopg.connect(url) as db:
        for migration in MIGRATIONS[:version]:
            for statement in migration:
                db.execute(statement)
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        db.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
        db.execute("INSERT INTO principals (name, kind, created_at, updated_at) VALUES ('partner-a', 'client', 1, 1)")
        db.execute("INSERT INTO api_keys (id, principal_id, hash, display, env, created_at) "
                   "VALUES ('key_old', 1, %s, 'sk_live_…', 'live', 1)", (apikeys.fingerprint(OLD_KEY),))


OLD_KEY = apikeys.generate("live")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_store_from_before_migrates_with_its_keys_secret(request, tmp_path, backend):
    if backend == "sqlite":
        url = str(tmp_path / "old.db")
        _old_sqlite_store(url)
    else:
        url = request.getfixturevalue("pg_url")
        _old_postgresql_store(url)
    store = open_store(url)
    with pytest.raises(StoreError, match="authz db init"):
        store.check_ready()
    old, new = store.migrate()
    assert new > old  # the publishable keys' migration, and any appended since
    match = store.keys.find(apikeys.fingerprint(OLD_KEY))
    assert (match.id, match.publishable, match.origins) == ("key_old", False, "")
    assert Admin(store).keys.get("key_old").to_json()["publishable"] is False
    _, pk = Admin(store).keys.create("web-shop", publishable=True, origins=[SHOP])
    assert store.keys.find(apikeys.fingerprint(pk)).origins == SHOP


# -- real servers ----------------------------------------------------------------------------------------

def test_through_a_real_server(store, policy_dir, server):
    write_policy(policy_dir, POLICY)
    created = subprocess.run([str(BIN / "authz"), "--db", store.url, "keys", "create", "--principal",
                              "web-shop", "--publishable", "--origin", SHOP, "--scope", "catalog:read",
                              "--policy-dir", str(policy_dir), "--json"],
                             capture_output=True, text=True, timeout=30, check=True)
    pk = json.loads(created.stdout)["key"]
    running = server(workers=2)

    def ask(method="GET", **headers):
        sent = {"X-Original-URI": "/v1/catalog/7", "X-Original-Method": method, "X-API-Key": pk, **headers}
        r = requests.get(running.url + "/auth-request", headers=sent, timeout=5)
        return r.status_code, r.headers.get("X-Auth-Reason"), r.headers.get("X-Auth-Client")

    assert ask(Origin=SHOP) == (200, None, "web-shop")
    assert ask(Origin="https://evil.example.net") == (403, "principal_not_allowed", None)
    assert ask() == (403, "principal_not_allowed", None)
    assert ask("POST", Origin=SHOP) == (403, "principal_not_allowed", None)
    # Two Origin headers, in either order (a server keeping one of them would allow one order): refused.
    for both in ((SHOP, "https://evil.example.net"), ("https://evil.example.net", SHOP), (SHOP, SHOP)):
        connection = http.client.HTTPConnection("127.0.0.1", running.port, timeout=5)
        connection.putrequest("GET", "/auth-request")
        for name, value in (("X-Original-URI", "/v1/catalog/7"), ("X-Original-Method", "GET"), ("X-API-Key", pk),
                            ("Origin", both[0]), ("Origin", both[1]), ("Connection", "close")):
            connection.putheader(name, value)
        connection.endheaders()
        answer = connection.getresponse()
        assert (answer.status, answer.getheader("X-Auth-Reason")) == (403, "principal_not_allowed"), both
        connection.close()
    r = requests.post(running.url + "/v1/decisions", timeout=5, json={
        "method": "GET", "url": "https://api.example.com/v1/catalog/7",
        "headers": {"X-API-Key": pk, "Origin": "null"}})
    assert r.status_code == 403 and "opaque origin" in r.json()["detail"]
