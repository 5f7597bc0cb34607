"""API key anomalies (issue 15): each kind raised by a scripted scenario and not by a
steady one, once per (key, kind, span) however many processes notice it; what each
raises (a row, a decision-log event line, the counter read with the Prometheus text
parser, a webhook event); the CLI (``keys anomalies``, ``--ack``, ``--on-anomaly``); a
key that opted in refused while an anomaly is open; and real gunicorn and granian
workers raising one anomaly for a revoked key presented to all of them.

Time is driven through stored timestamps (history written with past hours and first
sightings, a batch from after a key's expiry), never by waiting."""

from __future__ import annotations

import ipaddress
import json
import sqlite3
import time

import pytest
import requests
from click.testing import CliRunner
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from authz.admin import Admin
from authz.decision import Reason
from authz.observability import metrics
from authz.observability.decision_log import DecisionLog
from authz.request import CheckRequest
from authz.store import open_store
from authz.store.records import KeyUsage
from authz.webhooks.anomalies import KINDS, AnomalyDetector, Thresholds
from authz.webhooks.events import stable_id
from tests.conftest import ask_on_a_worker, engine_for, store_dir, write_policy

HOUR, DAY = 3600, 86400
LIMITS = Thresholds(learning=7 * DAY, factor=10.0, minimum=1000, trailing=7 * DAY)
HOME, ELSEWHERE = "203.0.113.0/24", "198.51.100.0/24"
POLICY = {
    "authenticators": {"partners": {"type": "api_key"}},
    "routes": [{"id": "orders", "match": {"paths": ["/v1/orders/**"]},
                "require": {"use": "partners", "scopes": ["orders:read"]}}],
}

pytestmark = pytest.mark.both_stores


def hour_of(at: float) -> int:
    return int(at // HOUR) * HOUR


def batch(key_id: str, at: float, requests_: int = 1, network: str = HOME, allowed: bool = True) -> KeyUsage:
    """What one worker's usage thread writes for a key: requests in the hour of ``at``,
    all from one client in ``network``, the last at ``at``."""
    client = network.replace("0/24", "7")
    counts = (requests_, 0) if allowed else (0, requests_)
    return KeyUsage(key_id, ((hour_of(at), *counts),), ((network, at, at),), at, allowed, client, "orders")


def history(store, key_id: str, now: float, days: int, per_hour: int, network: str = HOME) -> None:
    """``days`` of past use, ``per_hour`` requests each hour up to the one before ``now``'s."""
    start = hour_of(now) - days * DAY
    store.usage.add([KeyUsage(key_id, tuple((h, per_hour, 0) for h in range(start, hour_of(now), HOUR)),
                              ((network, start + 60, hour_of(now) - 60),), hour_of(now) - 60, True,
                              network.replace("0/24", "7"), "orders")])


def written(store, detector: AnomalyDetector, usage: KeyUsage) -> list:
    """As the usage thread does: the batch is written, then judged; what this process raised."""
    store.usage.add([usage])
    return detector.look([usage])


@pytest.fixture
def admin(store) -> Admin:
    return Admin(store)


@pytest.fixture
def detector(store) -> AnomalyDetector:
    return AnomalyDetector(store, LIMITS)


def kinds(raised) -> list[tuple[str, str]]:
    return [(a.kind, a.span) for a in raised]


# -- each kind: scripted, and steady -------------------------------------------------------------

def test_new_network_after_the_learning_period(store, admin, detector):
    now = time.time()
    key, _ = admin.keys.create("partner-a", ["orders:read"])
    history(store, key.id, now, days=10, per_hour=5)
    assert written(store, detector, batch(key.id, now)) == []  # steady: its own network
    raised = written(store, detector, batch(key.id, now + 1, network=ELSEWHERE))
    assert kinds(raised) == [("new_network", ELSEWHERE)]
    assert f"presented from {ELSEWHERE}, a client network it was never seen from" in raised[0].detail
    assert written(store, detector, batch(key.id, now + 2, network=ELSEWHERE)) == []  # seen now
    assert written(store, AnomalyDetector(store, LIMITS), batch(key.id, now + 3, network=ELSEWHERE)) == []


def test_no_new_network_while_learning_nor_for_publishable_keys(store, admin, detector):
    now = time.time()
    young, _ = admin.keys.create("partner-a", ["orders:read"])
    history(store, young.id, now, days=2, per_hour=5)  # two days of a seven-day learning period
    assert written(store, detector, batch(young.id, now, network=ELSEWHERE)) == []
    public, _ = admin.keys.create("shop", publishable=True, origins=["https://shop.example.com"])
    history(store, public.id, now, days=10, per_hour=5)  # every visitor's network is new
    assert written(store, detector, batch(public.id, now, network=ELSEWHERE)) == []
    assert store.anomalies.since(0) == []


def test_volume_above_k_times_the_median_hour(store, admin, detector):
    now = time.time()
    key, _ = admin.keys.create("partner-a", ["orders:read"])
    history(store, key.id, now, days=8, per_hour=100)
    assert written(store, detector, batch(key.id, now, 150)) == []  # steady: a busy hour, not 10x
    raised = written(store, detector, batch(key.id, now + 1, 900))  # 1050 in the hour, median 100
    assert kinds(raised) == [("volume", time.strftime("%Y-%m-%dT%H:00Z", time.gmtime(hour_of(now))))]
    assert "1050 requests in the hour" in raised[0].detail and "median hour (100)" in raised[0].detail
    assert written(store, detector, batch(key.id, now + 2, 5000)) == []  # one per hour


def test_no_volume_for_tiny_keys_nor_while_learning(store, admin, detector):
    now = time.time()
    tiny, _ = admin.keys.create("partner-a", ["orders:read"])
    history(store, tiny.id, now, days=8, per_hour=1)
    assert written(store, detector, batch(tiny.id, now, 500)) == []  # 500x its median, under the minimum
    young, _ = admin.keys.create("partner-b", ["orders:read"])
    history(store, young.id, now, days=3, per_hour=100)
    assert written(store, detector, batch(young.id, now, 5000)) == []  # three days of history
    assert store.anomalies.since(0) == []


def test_deprecated_key_used_in_the_last_day_of_its_grace(store, admin, detector):
    now = time.time()
    early, _ = admin.keys.create("partner-a", ["orders:read"])
    admin.keys.rotate(early.id, 7 * DAY)
    assert written(store, detector, batch(early.id, now)) == []  # steady: six days left to move
    late, _ = admin.keys.create("partner-b", ["orders:read"])
    _, new, _ = admin.keys.rotate(late.id, 12 * HOUR)
    raised = written(store, detector, batch(late.id, now))
    assert [a.kind for a in raised] == ["deprecated_in_use"]
    assert f"replaced by {new.id}" in raised[0].detail and "grace period ends" in raised[0].detail
    assert written(store, detector, batch(late.id, now + 60)) == []  # one per grace period


def test_revoked_key_presented(store, admin, detector):
    now = time.time()
    key, _ = admin.keys.create("partner-a", ["orders:read"])
    revoked = admin.keys.revoke(key.id)
    # Counted before the revocation, written after: nothing.
    assert written(store, detector, batch(key.id, revoked.revoked_at - 5)) == []
    raised = written(store, detector, batch(key.id, now + 1, 3, allowed=False))
    assert kinds(raised) == [("revoked_presented", time.strftime("%Y-%m-%d", time.gmtime(now + 1)))]
    assert raised[0].detail == (f"revoked API key {key.id} was presented 3 time(s), last from 203.0.113.7 "
                                "on route orders")
    assert written(store, detector, batch(key.id, now + 2, allowed=False)) == []  # one per day
    assert kinds(written(store, detector, batch(key.id, now + DAY, allowed=False))) == [
        ("revoked_presented", time.strftime("%Y-%m-%d", time.gmtime(now + DAY)))]


def test_expired_key_presented(store, admin, detector):
    now = time.time()
    key, _ = admin.keys.create("partner-a", ["orders:read"], expires_at=now + HOUR)
    assert written(store, detector, batch(key.id, now)) == []  # steady: still valid
    raised = written(store, detector, batch(key.id, now + 2 * HOUR, allowed=False))  # an hour after its expiry
    assert [a.kind for a in raised] == ["expired_presented"]
    assert raised[0].detail.startswith(f"API key {key.id}, expired ")


def test_a_steady_key_raises_nothing(store, admin, detector):
    now = time.time()
    key, _ = admin.keys.create("partner-a", ["orders:read"], expires_at=now + 30 * DAY)
    history(store, key.id, now, days=10, per_hour=100)
    for minute in range(0, 60, 10):
        assert written(store, detector, batch(key.id, now + minute * 60, 20)) == []
    assert store.anomalies.since(0) == []


# -- once, wherever noticed; what each raises ---------------------------------------------------

def anomaly_samples(text: str) -> dict[str, float]:
    """``authz_api_key_anomalies_total`` by kind, read with the Prometheus text parser."""
    return {sample.labels["kind"]: sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name == "authz_api_key_anomalies_total"}


def samples() -> dict[str, float]:
    metrics.flush()
    return anomaly_samples(generate_latest(REGISTRY).decode())


def test_one_anomaly_however_many_processes_notice_it(store, admin, tmp_path):
    """Two workers (two detectors, each its own memory) judge the same revoked key: one
    row, one counter increment, one log line, one webhook event."""
    key, secret = admin.keys.create("partner-a", ["orders:read"])
    admin.keys.revoke(key.id)
    log = tmp_path / "decisions.log"
    decision_log = DecisionLog(str(log))
    workers = [AnomalyDetector(store, LIMITS, decision_log.event, announce=True) for _ in range(2)]
    before = samples()
    assert set(before) >= set(KINDS)  # every kind exposed (at 0) before the first anomaly
    now = time.time()
    raised = [written(store, worker, batch(key.id, now + n, allowed=False)) for n, worker in enumerate(workers * 2)]
    assert [len(r) for r in raised] == [1, 0, 0, 0]
    [anomaly] = store.anomalies.since(0)
    assert anomaly == raised[0][0]
    after = samples()
    assert {kind: after[kind] - before.get(kind, 0) for kind in KINDS} == {
        kind: 1 if kind == "revoked_presented" else 0 for kind in KINDS}
    decision_log.flush()
    [line] = log.read_text().splitlines()
    assert secret not in line
    entry = json.loads(line)
    assert list(entry) == ["ts", "event", "id", "kind", "credential", "principal", "span", "detail"]
    assert (entry["event"], entry["id"], entry["kind"], entry["credential"], entry["principal"]) == (
        "api_key.anomaly", anomaly.id, "revoked_presented", key.id, "partner-a")
    [sent] = store.outbox.list()
    assert (sent.type, sent.id) == ("api_key.anomaly", stable_id("api_key.anomaly", key.id, anomaly.kind,
                                                                 anomaly.span))
    body = json.loads(sent.body)
    assert body["data"] == {"anomaly_id": anomaly.id, "key_id": key.id, "principal": "partner-a",
                            "kind": "revoked_presented", "span": anomaly.span, "detail": anomaly.detail}
    assert secret not in sent.body


def test_no_webhook_event_when_nobody_delivers(store, admin, detector):
    key, _ = admin.keys.create("partner-a", ["orders:read"])
    admin.keys.revoke(key.id)
    assert len(written(store, detector, batch(key.id, time.time(), allowed=False))) == 1
    assert store.outbox.list() == []


# -- refused on anomaly (opt-in per key) ---------------------------------------------------------

def test_on_anomaly_deny_refuses_the_key_until_acknowledged(store, admin, detector, policy_dir):
    write_policy(policy_dir, POLICY)
    engine = engine_for(store, policy_dir)
    now = time.time()
    guarded, guarded_secret = admin.keys.create("partner-a", ["orders:read"], on_anomaly="deny")
    reported, reported_secret = admin.keys.create("partner-b", ["orders:read"])

    def decide(secret: str):
        return engine.decide(CheckRequest.build("GET", "/v1/orders/1", "api.example.com",
                                                headers=[("X-API-Key", secret)],
                                                client_ip=ipaddress.ip_address("198.51.100.7")))

    assert decide(guarded_secret).allowed
    for key in (guarded, reported):
        history(store, key.id, now, days=10, per_hour=5)
        written(store, detector, batch(key.id, now, network=ELSEWHERE))
    [anomaly] = store.anomalies.open(guarded.id)
    d = decide(guarded_secret)
    assert (d.status, d.reason) == (403, Reason.PRINCIPAL_NOT_ALLOWED)
    assert d.detail == (f"API key {guarded.id} is refused on anomaly: new_network ({anomaly.id}) is not "
                        f"acknowledged (authz keys anomalies --ack {anomaly.id})")
    assert decide(reported_secret).allowed  # its anomaly is reported, not acted on
    Admin(store).anomalies.ack(anomaly.id)
    assert decide(guarded_secret).allowed
    assert store.anomalies.open(guarded.id) == [] and len(store.anomalies.since(0)) == 2


# -- the CLI -------------------------------------------------------------------------------------

@pytest.fixture
def cli(store):
    """The CLI on the test's store (its URL: an SQLite file or a PostgreSQL database)."""
    from authz.cli import main

    def run(*args, ok=True):
        result = CliRunner().invoke(main, ["--db", store.url, *args])
        assert (result.exit_code == 0) == ok, result.output
        return result.output

    return run


def test_keys_anomalies_lists_and_acknowledges(cli, store):
    key = json.loads(cli("keys", "create", "--principal", "partner-a", "--on-anomaly", "deny", "--json"))
    assert key["on_anomaly"] == "deny"
    assert cli("keys", "anomalies").strip() == "no API key anomaly in the last 7d"
    cli("keys", "revoke", key["id"])
    now = time.time()
    written(store, AnomalyDetector(store, LIMITS), batch(key["id"], now + 1, allowed=False))
    [old] = store.anomalies.since(0)
    text = cli("keys", "anomalies")
    header, row = text.splitlines()
    assert header.split()[:6] == ["ID", "KEY", "KIND", "SPAN", "RAISED", "ACKED"]
    assert row.split()[:4] == [old.id, key["id"], "revoked_presented", old.span] and " no " in row
    listed = json.loads(cli("keys", "anomalies", "--since", "30d", "--json"))
    assert listed == [old.to_json()]
    acked = json.loads(cli("keys", "anomalies", "--ack", old.id, "--json"))
    assert acked["id"] == old.id and acked["acked_at"] is not None
    assert cli("keys", "anomalies", "--ack", old.id, ok=False).count("Error:") == 1
    updated = json.loads(cli("keys", "update", key["id"], "--on-anomaly", "allow", "--json"))
    assert updated["on_anomaly"] == "allow"
    assert "on anomaly:    allow" in cli("keys", "show", key["id"])


@pytest.mark.parametrize(("args", "message"), [
    (["keys", "anomalies", "--since", "lately"], "'lately' is not a duration"),
    (["keys", "anomalies", "--since", "0s"], "the span must be positive"),
    (["keys", "anomalies", "--ack", "an_0000000000000000"], "no anomaly with id 'an_0000000000000000'"),
    (["keys", "update", "key_doesnotexist", "--on-anomaly", "deny"], "no API key with id 'key_doesnotexist'"),
    (["keys", "update", "KEY", "--on-anomaly", "block"], "'block' is not one of 'allow', 'deny'"),
    (["keys", "create", "--principal", "partner-b", "--on-anomaly", "never"], "'never' is not one of"),
])
def test_anomaly_commands_refuse_bad_input_in_one_line(cli, args, message):
    key = json.loads(cli("keys", "create", "--principal", "partner-a", "--json"))
    output = cli(*[key["id"] if arg == "KEY" else arg for arg in args], ok=False)
    assert message in output and output.count("Error:") == 1


# -- real servers ----------------------------------------------------------------------------------

def test_workers_raise_one_anomaly_for_a_revoked_key(server, store, policy_dir, tmp_path):
    """Three workers each see the revoked key and write usage every 0.2 s: the store keeps
    one anomaly, the decision log has one event line, /metrics counts one; the steady key
    used alongside raises nothing."""
    write_policy(policy_dir, POLICY)
    admin = Admin(store)
    _, good_key = admin.keys.create("partner-a", ["orders:read"])
    revoked, revoked_key = admin.keys.create("partner-b", ["orders:read"])
    admin.keys.revoke(revoked.id)
    prom = tmp_path / "prom"
    prom.mkdir()
    started = server(workers=3, PROMETHEUS_MULTIPROC_DIR=str(prom))
    headers = {"X-Original-Method": "GET", "X-Original-URI": "/v1/orders/1", "X-Forwarded-For": "203.0.113.7"}
    served: set[int] = set()
    for _ in range(100):  # until every worker was presented the revoked key
        assert ask_on_a_worker(started, {**headers, "X-API-Key": good_key})[1] == 200
        pid, status = ask_on_a_worker(started, {**headers, "X-API-Key": revoked_key})
        assert status == 401
        served.add(pid)
        if len(served) == 3:
            break
    assert len(served) == 3, f"{len(served)} of 3 workers were presented the revoked key"
    deadline = time.monotonic() + 20
    while not (counted := anomaly_samples(requests.get(started.url + "/metrics", timeout=5).text)).get(
            "revoked_presented"):  # a worker writes its counts at most a quarter second after
        assert time.monotonic() < deadline, f"no anomaly counted: {store.anomalies.since(0)}"
        time.sleep(0.1)
    assert counted == {kind: 1 if kind == "revoked_presented" else 0 for kind in KINDS}
    started.stop()  # every worker writes, and judges, what it still holds
    assert [(a.key_id, a.kind) for a in store.anomalies.since(0)] == [(revoked.id, "revoked_presented")]
    lines = (store_dir(store) / "decisions.log").read_text().splitlines()
    events = [json.loads(line) for line in lines if '"event":' in line]
    assert [(e["event"], e["credential"]) for e in events] == [("api_key.anomaly", revoked.id)]


@pytest.mark.sqlite_only("builds the schema before anomalies by hand")
def test_a_store_before_anomalies_migrates(tmp_path):
    """An SQLite store at the schema before anomalies gains the table and the column."""
    from authz.store.sqlite import migrations

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        for step in migrations.MIGRATIONS[:-1]:
            for statement in step:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {len(migrations.MIGRATIONS) - 1}")
    store = open_store(path)
    assert store.migrate() == (len(migrations.MIGRATIONS) - 1, len(migrations.MIGRATIONS))
    record, _ = Admin(store).keys.create("partner-a")
    assert record.on_anomaly == "allow" and store.anomalies.since(0) == []
    store.close()
