"""The decision log and /metrics under a multi-worker gunicorn."""

import json
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from authz.admin import Admin
from authz.observability.metrics import FLUSH_SECONDS
from tests.conftest import ROOT, write_policy

pytestmark = pytest.mark.both_stores

POLICY = json.loads((ROOT / "policies" / "api.json").read_text())


def samples(text: str) -> dict:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def read_log(path, count: int, timeout: float = 5.0) -> list[dict]:
    """Lines are written in batches at most half a second apart: wait for them."""
    deadline = time.time() + timeout
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count or time.time() > deadline:
            time.sleep(0.6)  # and anything that would be one too many
            return [json.loads(line) for line in path.read_text().splitlines()]
        time.sleep(0.1)


def ask(server, key=None, uri="/v1/orders/1", request_id=None):
    headers = {"X-Original-URI": uri, "X-Original-Method": "GET", "Connection": "close"}
    if key:
        headers["X-API-Key"] = key
    if request_id:
        headers["X-Request-ID"] = request_id
    return requests.get(server.url + "/auth-request", headers=headers, timeout=5)


def test_metrics_count_what_was_sent_across_workers(store, policy_dir, gunicorn, tmp_path):
    write_policy(policy_dir, POLICY)
    _, key = Admin(store).keys.create("partner-a", ["orders:read"])
    prom = tmp_path / "prom"
    prom.mkdir()
    server = gunicorn(workers=3, PROMETHEUS_MULTIPROC_DIR=str(prom))
    from concurrent.futures import ThreadPoolExecutor

    rounds = 0
    pids: set[str] = set()
    while len(pids) < 2 and rounds < 5:  # until several workers have answered
        rounds += 1
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda i: ask(server, key if i < 25 else None,
                                                   "/nowhere" if i >= 32 else "/v1/orders/1").status_code, range(35)))
        assert statuses == [200] * 25 + [401] * 7 + [403] * 3
        time.sleep(0.2)
        pids = {line.split()[0] for line in server.access_log.read_text().splitlines()}
    assert len(pids) >= 2  # the counts below are summed over several workers
    time.sleep(2 * FLUSH_SECONDS + 0.1)  # each worker writes its counts at most this much later
    text = requests.get(server.url + "/metrics", timeout=5).text
    got = samples(text)
    allowed = ("authz_decisions_total", (("decision", "allow"), ("reason", ""), ("route", "orders-read")))
    assert got[allowed] == 25 * rounds
    assert got[("authz_decisions_total", (("decision", "deny"), ("reason", "credentials_missing"),
                                          ("route", "orders-read")))] == 7 * rounds
    assert got[("authz_decisions_total", (("decision", "deny"), ("reason", "no_route"), ("route", "")))] == 3 * rounds
    assert got[("authz_decision_duration_seconds_count", ())] == 35 * rounds
    assert got[("authz_authenticator_outcomes_total", (("authenticator", "partner_key"), ("outcome", "valid"),
                                                       ("type", "api_key")))] == 25 * rounds
    revision = requests.get(server.url + "/readyz", timeout=5).json()["revision"]
    assert got[("authz_policy_info", (("revision", revision),))] == 1

    (policy_dir / "policy.json").write_text("{ broken")
    time.sleep(1.5)
    ask(server, key)  # wake every worker's watcher at least once
    text = requests.get(server.url + "/metrics", timeout=5).text
    assert samples(text).get(("authz_policy_reloads_total", (("result", "failure"),)), 0) >= 1


def test_decision_log_lines(store, policy_dir, gunicorn, tmp_path):
    write_policy(policy_dir, POLICY)
    record, key = Admin(store).keys.create("partner-a", ["orders:read"])
    log = tmp_path / "decisions.jsonl"
    server = gunicorn(workers=2, AUTHZ_DECISION_LOG=str(log))
    ask(server, key, request_id="req-allow-1")
    ask(server, "sk_live_" + "Z" * 43, request_id="req-deny-1")
    lines = read_log(log, 2)
    allow = next(entry for entry in lines if entry["request_id"] == "req-allow-1")
    deny = next(entry for entry in lines if entry["request_id"] == "req-deny-1")
    assert (allow["decision"], allow["status"], allow["principal"], allow["credential"]) == (
        "allow", 200, "partner-a", record.id)
    assert allow["methods"] == ["api_key"] and allow["client_ip"] == "127.0.0.1"
    assert allow["latency_us"] > 0 and len(allow["policy_revision"]) == 12 and allow["ts"].endswith("Z")
    assert (deny["decision"], deny["status"], deny["reason"]) == ("deny", 401, "credentials_invalid")
    text = log.read_text()
    assert key not in text and "Z" * 43 not in text  # never a secret


def test_allow_sampling_keeps_every_deny(store, policy_dir, gunicorn, tmp_path):
    write_policy(policy_dir, POLICY)
    _, key = Admin(store).keys.create("partner-a", ["orders:read"])
    log = tmp_path / "decisions.jsonl"
    server = gunicorn(workers=2, AUTHZ_DECISION_LOG=str(log), AUTHZ_DECISION_LOG_ALLOW_SAMPLE="0")
    for _ in range(10):
        ask(server, key)
        ask(server)
    decisions = [entry["decision"] for entry in read_log(log, 10)]
    assert decisions == ["deny"] * 10


def test_readyz_details_and_metrics_only_for_trusted_peers(make_client):
    client = make_client({"authenticators": {"public": {"type": "anonymous"}},
                          "routes": [{"id": "open", "require": "public"}]})
    outside = {"REMOTE_ADDR": "203.0.113.9"}
    assert client.get("/healthz", environ_base=outside).status_code == 200
    ready = client.get("/readyz", environ_base=outside)
    assert ready.status_code == 200 and ready.get_json() == {"status": "ready"}  # no files, no revision
    assert "revision" in client.get("/readyz").get_json()
    metrics = client.get("/metrics", environ_base=outside)
    assert metrics.status_code == 403 and b"authz_" not in metrics.data
    assert b"authz_decisions_total" in client.get("/metrics").data


def test_batched_counts_are_what_direct_observations_would_give():
    """The per-process tally (one mmap write per label set and bucket per flush) ends
    in exactly the samples prometheus_client's own observe() and inc() would write."""
    import random

    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from authz.observability import metrics

    registry = CollectorRegistry()
    bounds = metrics.DURATION._upper_bounds[:-1]  # without +Inf
    direct = Histogram("d", "d", buckets=bounds, registry=registry)
    counter = Counter("c", "c", ["route"], registry=registry)
    metrics.flush()
    before = {s.name + str(s.labels): s.value for f in metrics.DURATION.collect() for s in f.samples}
    rng = random.Random(7)
    values = [rng.choice(bounds) for _ in range(50)] + [rng.uniform(0, 1) for _ in range(500)] + [0.0, 5.0]
    for value in values:
        direct.observe(value)
        metrics.decision("tally-test", True, None, value)
        counter.labels("tally-test").inc()
    assert metrics._TALLY.counts  # pending, not yet written
    metrics.flush()
    after = {s.name + str(s.labels): s.value for f in metrics.DURATION.collect() for s in f.samples}
    expected = {s.name.replace("d_", "") + str(s.labels): s.value for f in direct.collect() for s in f.samples}
    for name, value in after.items():
        suffix = name.removeprefix("authz_decision_duration_seconds_")
        if suffix.startswith("created"):
            continue
        assert value - before[name] == pytest.approx(expected[suffix]), name
    decided = metrics._child(metrics.DECISIONS, "tally-test", "allow", "")._value.get()
    assert decided == len(values) == counter.labels("tally-test")._value.get()
    assert b"d_bucket" in generate_latest(registry)
