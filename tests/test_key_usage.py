"""Usage per API key (issue 15): what counts (a request whose key was identified by its
secret, allowed or denied; never a wrong secret), real gunicorn and granian workers
counting into one store and writing it all at SIGTERM, pruning past the retention, and
the CLI that reads it (``keys usage``, ``keys show``, ``keys list --unused-since``)."""

from __future__ import annotations

import ipaddress
import json
import time
from collections import Counter

import pytest
from click.testing import CliRunner

from authz.admin import Admin
from authz.credentials import apikeys
from authz.store import open_store
from authz.store.records import KeyUsage
from tests.conftest import ask_on_a_worker, store_dir, write_policy

HOUR, DAY = 3600, 86400
POLICY = {
    "authenticators": {"partners": {"type": "api_key"}},
    "routes": [{"id": "orders", "match": {"paths": ["/v1/orders/**"]},
                "require": {"use": "partners", "scopes": ["orders:read"]}},
               {"id": "admin", "match": {"paths": ["/admin/**"]}, "require": {"use": "partners", "scopes": ["admin"]}}],
}


def ask(key: str, path: str = "/v1/orders/1", client: str = "203.0.113.7", method: str = "GET") -> dict:
    return {"X-Original-Method": method, "X-Original-URI": path, "X-API-Key": key, "X-Forwarded-For": client}


def hours(store, key_id: str) -> tuple[int, int]:
    """(allowed, denied) over every hour on record."""
    rows = store.usage.hours(key_id, 0)
    return sum(h.allowed for h in rows), sum(h.denied for h in rows)


# -- what counts (in process, every door's observe) ------------------------------------------

@pytest.mark.both_stores
def test_a_request_counts_for_its_key_when_the_key_was_identified(store, make_client):
    admin = Admin(store)
    good, good_key = admin.keys.create("partner-a", ["orders:read"])
    revoked, revoked_key = admin.keys.create("partner-b", ["orders:read"])
    admin.keys.revoke(revoked.id)
    bound, bound_key = admin.keys.create("partner-c", ["orders:read"], allow_ips=["192.0.2.0/24"])
    expiring, expiring_key = admin.keys.create("partner-d", ["orders:read"], expires_at=time.time() + 0.2)
    client = make_client(POLICY)
    state = client.application.extensions["authz"]
    statuses = [client.get("/auth-request", headers=headers).status_code for headers in (
        ask(good_key), ask(good_key, client="2001:db8:7:1::5"), ask(good_key, method="HEAD"),  # HEAD: read twice
        ask(good_key, "/admin/x"),  # short of a scope: denied, counted
        ask(revoked_key), ask(bound_key),  # refused, identified: counted
        ask(apikeys.generate("live")),  # a wrong secret: nobody's
        ask(good_key, "/nowhere"),  # no route: no key was looked at
    )]
    time.sleep(0.25)
    statuses.append(client.get("/auth-request", headers=ask(expiring_key, client="192.0.2.1")).status_code)
    assert statuses == [200, 200, 200, 403, 401, 401, 401, 403, 401]
    state.store.last_used.flush()
    assert hours(store, good.id) == (3, 1) and hours(store, revoked.id) == (0, 1)
    assert hours(store, bound.id) == (0, 1) and hours(store, expiring.id) == (0, 1)
    assert [n.network for n in store.usage.networks(good.id)] == ["203.0.113.0/24", "2001:db8:7::/48"]
    last = store.usage.last_request(good.id)
    assert (last.allowed, last.client_ip, last.route) == (False, "203.0.113.7", "admin")
    assert store.usage.last_request(expiring.id).client_ip == "192.0.2.1"
    assert sum(sum(hours(store, k.id)) for k in admin.keys.list()) == 7  # nothing else was counted


@pytest.mark.both_stores
def test_requests_after_a_rotation_count_for_the_old_key(store, make_client):
    admin = Admin(store)
    old, old_key = admin.keys.create("partner-a", ["orders:read"])
    client = make_client(POLICY)
    state = client.application.extensions["authz"]
    client.get("/auth-request", headers=ask(old_key))
    _, new, new_key = admin.keys.rotate(old.id, 3600)
    # The successor first: a key the server has not seen makes a replica (PostgreSQL) catch
    # up with the change log, which holds the old key's deprecation from the same write.
    for headers in (ask(new_key), ask(old_key), ask(old_key, "/admin/x")):
        client.get("/auth-request", headers=headers)
    state.store.last_used.flush()
    view = admin.usage.view(old.id)
    assert view.rotation.to_json() == {"replaced_by": new.id, "rotated_at": new.created_at, "requests": 2,
                                       "last_request_at": view.last_request.at, "still_used": True}
    assert hours(store, old.id) == (2, 1) and hours(store, new.id) == (1, 0)
    assert admin.usage.view(new.id).rotation is None


def test_on_postgresql_a_replica_serves_and_usage_goes_to_the_database(pg_url, policy_dir):
    from authz.app import create_app
    from authz.config import Settings
    from authz.store.replica import Replica

    shared = open_store(pg_url)
    Admin(shared).init(60)
    key, secret = Admin(shared).keys.create("partner-a", ["orders:read"])
    write_policy(policy_dir, POLICY)
    app = create_app(Settings(db_path=pg_url, policy_dir=policy_dir, decision_log="off"))
    state = app.extensions["authz"]
    assert isinstance(state.store, Replica)
    opened_stores = (state.store, shared)
    client = app.test_client()
    logged = shared.changes.latest()
    assert [client.get("/auth-request", headers=ask(secret, path)).status_code
            for path in ("/v1/orders/1", "/v1/orders/2", "/admin/x")] == [200, 200, 403]
    assert shared.usage.hours(key.id, 0) == []  # in memory until the batch
    state.store.last_used.flush()
    assert hours(shared, key.id) == (2, 1) and shared.usage.last_request(key.id).route == "admin"
    assert shared.changes.latest() == logged  # usage is nothing replicas follow
    for opened in opened_stores:
        opened.close()


@pytest.mark.both_stores
def test_key_usage_off_counts_nothing(store, make_client):
    key, secret = Admin(store).keys.create("partner-a", ["orders:read"])
    client = make_client(POLICY, key_usage=False)
    assert client.get("/auth-request", headers=ask(secret)).status_code == 200
    client.application.extensions["authz"].store.last_used.flush()
    assert store.usage.hours(key.id, 0) == [] and store.usage.last_request(key.id) is None
    assert Admin(store).keys.get(key.id).last_used_at is not None  # last use is recorded as ever


# -- real servers ----------------------------------------------------------------------------

@pytest.mark.both_stores
def test_usage_counts_every_request_across_workers_and_survives_sigterm(server, store, policy_dir):
    """Three workers count in memory; nothing is written before the interval (an hour),
    so every count in the store was written as the workers ended on SIGTERM."""
    write_policy(policy_dir, POLICY)
    admin = Admin(store)
    good, good_key = admin.keys.create("partner-a", ["orders:read"])
    revoked, revoked_key = admin.keys.create("partner-b", ["orders:read"])
    admin.keys.revoke(revoked.id)
    started = server(workers=3, AUTHZ_LAST_USED_INTERVAL="3600")
    deadline = time.monotonic() + 20
    while len(workers := started.workers()) < 3:  # the first answers before every worker is up
        assert time.monotonic() < deadline, f"{len(workers)} of 3 workers started"
        time.sleep(0.05)
    sent: Counter = Counter()
    served: Counter = Counter()
    clients = [f"203.0.113.{n}" for n in range(1, 4)] + ["198.51.100.9", "2001:db8:42::1"]
    n = 0
    while min(served[pid] for pid in workers) < 3:  # the kernel spreads connections: each worker answers some
        assert n < 600, f"a worker answered nothing: {served}"
        key, path, expect, kind = [(good_key, "/v1/orders/1", 200, "allowed"), (good_key, "/admin/x", 403, "denied"),
                                   (revoked_key, "/v1/orders/1", 401, "revoked"),
                                   (apikeys.generate("live"), "/v1/orders/1", 401, "unknown")][n % 4]
        pid, status = ask_on_a_worker(started, ask(key, path, clients[n % len(clients)]))
        assert status == expect
        served[pid] += 1
        sent[kind] += 1
        n += 1
    assert store.usage.hours(good.id, 0) == [] and store.usage.last_request(good.id) is None  # all in memory
    started.stop()
    assert hours(store, good.id) == (sent["allowed"], sent["denied"])
    assert hours(store, revoked.id) == (0, sent["revoked"])
    assert {n.network for n in store.usage.networks(good.id)} == {"203.0.113.0/24", "198.51.100.0/24",
                                                                   "2001:db8:42::/48"}
    assert admin.keys.get(good.id).last_used_at is not None
    lines = (store_dir(store) / "decisions.log").read_text().splitlines()
    assert len([line for line in lines if '"path":"/' in line]) == n  # the decision log lost nothing either


@pytest.mark.both_stores
def test_usage_past_the_retention_is_pruned(server, store, policy_dir):
    """Usage is stored with times a day and more back; the servers keep one day
    (AUTHZ_USAGE_RETENTION_DAYS=1) and prune on their first round after a request."""
    write_policy(policy_dir, POLICY)
    admin = Admin(store)
    key, secret = admin.keys.create("partner-a", ["orders:read"])
    gone, _ = admin.keys.create("partner-b", ["orders:read"])
    now = time.time()
    old, recent = int(now // HOUR) * HOUR - 30 * HOUR, int(now // HOUR) * HOUR - 20 * HOUR
    store.usage.add([KeyUsage(key.id, ((old, 5, 0), (recent, 7, 1)),
                              (("192.0.2.0/24", old, old), ("198.51.100.0/24", old, recent + 60)),
                              recent + 60, True, "198.51.100.1", "orders"),
                     KeyUsage(gone.id, ((old, 1, 0),), (), old + 60, True, "192.0.2.1", "orders")])
    started = server(workers=3, AUTHZ_USAGE_RETENTION_DAYS="1")
    ask_on_a_worker(started, ask(secret))
    deadline = time.monotonic() + 20
    while store.usage.last_request(gone.id) is not None:
        assert time.monotonic() < deadline, "usage past the retention was not pruned"
        time.sleep(0.1)
    assert [(h.hour, h.allowed) for h in store.usage.hours(key.id, 0)][:1] == [(recent, 7)]
    assert [n.network for n in store.usage.networks(key.id)] == ["198.51.100.0/24"]
    assert store.usage.hours(gone.id, 0) == []


# -- the CLI ---------------------------------------------------------------------------------

@pytest.fixture(params=["sqlite", "postgresql"])
def cli(request, tmp_path):
    """The CLI on a fresh store (an SQLite file, a PostgreSQL database), and the store."""
    db = str(tmp_path / "cli.db") if request.param == "sqlite" else request.getfixturevalue("pg_url")

    def run(*args, ok=True):
        result = CliRunner().invoke(main_group(), ["--db", db, *args])
        assert (result.exit_code == 0) == ok, result.output
        return result.output

    run("db", "init")
    run.store = open_store(db, last_used_interval=3600)
    yield run
    run.store.close()


def main_group():
    from authz.cli import main

    return main


def test_keys_usage_table_sparkline_and_json(cli):
    key = json.loads(cli("keys", "create", "--principal", "partner-a", "--json"))
    today = int(time.time() // DAY) * DAY
    cli.store.usage.add([KeyUsage(key["id"], ((today - 2 * DAY + HOUR, 40, 2), (today - 2 * DAY + 5 * HOUR, 40, 0),
                                              (today, 9, 1), (today - 9 * DAY, 1000, 0)),
                                  (("203.0.113.0/24", today - 2 * DAY, today), ("2001:db8::/48", today, today)),
                                  today + 60, False, "2001:db8::7", "orders")])
    text = cli("keys", "usage", key["id"], "--since", "3d")
    assert text.splitlines()[0] == f"{key['id']} (partner-a): 3 day(s) to today, UTC"
    days = [line.split() for line in text.splitlines() if line[:4].isdigit()]
    assert [d[1:] for d in days] == [["80", "2", "82"], ["0", "0", "0"], ["9", "1", "10"]]
    assert ["total", "89", "3", "92"] in [line.split() for line in text.splitlines()]
    assert "█▁▃  requests per day" in text
    assert "203.0.113.0/24" in text and "2001:db8::/48" in text
    assert "denied, from 2001:db8::7 on route orders" in text
    out = json.loads(cli("keys", "usage", key["id"], "--since", "1w", "--json"))
    assert (out["allowed"], out["denied"], len(out["days"]), out["sparkline"]) == (89, 3, 7, "▁▁▁▁█▁▃")
    assert out["days"][-1] == {"day": time.strftime("%Y-%m-%d", time.gmtime(today)), "start": today,
                               "allowed": 9, "denied": 1}
    assert [h["hour"] for h in out["hours"]] == [today - 2 * DAY + HOUR, today - 2 * DAY + 5 * HOUR, today]
    assert out["last_request"]["client_ip"] == "2001:db8::7" and out["since_rotation"] is None
    assert json.loads(cli("keys", "usage", key["id"], "--since", "30d", "--json"))["allowed"] == 1089


@pytest.mark.parametrize(("args", "message"), [
    (["keys", "usage", "key_doesnotexist"], "no API key with id 'key_doesnotexist'"),
    (["keys", "usage", "KEY", "--since", "soon"], "'soon' is not a duration"),
    (["keys", "usage", "KEY", "--since", "0d"], "ask for 1 to 90 days, not 0"),
    (["keys", "usage", "KEY", "--since", "91d"], "usage is kept for 90 days (AUTHZ_USAGE_RETENTION_DAYS)"),
    (["keys", "show", "key_doesnotexist"], "no API key with id 'key_doesnotexist'"),
    (["keys", "list", "--unused-since", "a while"], "'a while' is not a duration"),
    (["keys", "list", "--unused-since", "0s"], "longer than nothing"),
])
def test_usage_commands_refuse_bad_input_in_one_line(cli, args, message):
    key = json.loads(cli("keys", "create", "--principal", "partner-a", "--json"))
    output = cli(*[key["id"] if arg == "KEY" else arg for arg in args], ok=False)
    assert message in output and output.count("Error:") == 1


def test_show_and_list_tell_when_a_rotated_key_is_safe_to_revoke(cli):
    old = json.loads(cli("keys", "create", "--principal", "partner-a", "--json"))
    rotated = json.loads(cli("keys", "rotate", old["id"], "--grace", "7d", "--json"))
    new_id = rotated["new"]["id"]
    shown = cli("keys", "show", old["id"])
    assert f"to {new_id}; no request since: safe to revoke (authz keys revoke {old['id']})" in shown
    assert f"-> {new_id}, none since" in cli("keys", "list")
    after = rotated["new"]["created_at"] + 1
    cli.store.usage.add([KeyUsage(old["id"], ((int(after // HOUR) * HOUR, 3, 1),), (), after, True, "192.0.2.4",
                                  "orders", after_rotation=4)])
    shown = cli("keys", "show", old["id"])
    assert "since then 4 request(s), the last" in shown and "still in use until" in shown
    assert "last request:  " in shown and "allowed, from 192.0.2.4 on route orders" in shown
    assert f"-> {new_id}, 4 request(s) since" in cli("keys", "list")
    listed = {k["id"]: k for k in json.loads(cli("keys", "list", "--json"))}
    assert listed[old["id"]]["since_rotation"] == {"replaced_by": new_id, "rotated_at": rotated["new"]["created_at"],
                                                   "requests": 4, "last_request_at": after, "still_used": True}
    assert listed[new_id]["since_rotation"] is None and listed[new_id]["last_request"] is None
    shown = json.loads(cli("keys", "show", old["id"], "--json"))
    assert shown["since_rotation"]["requests"] == 4 and shown["last_request"]["route"] == "orders"
    cli("keys", "revoke", old["id"])
    assert "since then 4 request(s), the last" in cli("keys", "show", old["id"])
    assert "still presented, and refused (revoked)" in cli("keys", "show", old["id"])


def test_list_unused_since(cli):
    """Time is driven by stored timestamps: the listing is asked as of 40 days from now."""
    keys = {name: json.loads(cli("keys", "create", "--principal", name, "--json"))["id"]
            for name in ("idle", "old-use", "refused-lately", "revoked", "used")}
    cli("keys", "revoke", keys["revoked"])
    now = time.time()
    later = now + 40 * DAY
    cli.store.keys.touch({keys["used"]: later - 5 * DAY, keys["old-use"]: later - 35 * DAY,
                          keys["revoked"]: later - 35 * DAY})
    cli.store.usage.add([KeyUsage(keys["refused-lately"], ((int(now // HOUR) * HOUR, 0, 1),), (), later - DAY,
                                  False, "192.0.2.1", "orders")])
    unused = Admin(cli.store).usage.views(unused_for=30 * DAY, now=later)
    assert [view.key.id for view in unused] == [keys["idle"], keys["old-use"]]  # never used, used long ago
    assert json.loads(cli("keys", "list", "--unused-since", "30d", "--json")) == []  # as of now: all are new
    assert cli("keys", "list", "--unused-since", "30d").strip() == "no API key unused for 30d"
    assert len(json.loads(cli("keys", "list", "--json"))) == 5


def test_the_network_of_an_address(store):
    from authz.store.last_used import client_network

    ip = ipaddress.ip_address
    assert client_network(ip("203.0.113.77")) == "203.0.113.0/24"
    assert client_network(ip("::ffff:203.0.113.77")) == "203.0.113.0/24"
    assert client_network(ip("2001:db8:abcd:12::1")) == "2001:db8:abcd::/48"
