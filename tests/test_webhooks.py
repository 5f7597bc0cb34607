"""Expiry warnings and the webhook: the scan over real stores, deliveries to a real HTTP
receiver on loopback (signed, retried after a forced failure, each event accepted once),
the outbox across a restart and between competing deliverers, `authz keys expiring`,
the gauges through /metrics, and the same end to end under real gunicorn and granian."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from authz.admin import Admin
from authz.cli import main
from authz.config import Settings, SettingsError
from authz.credentials import apikeys
from authz.credentials.webhook_signature import new_secret, parse_secret, signature
from authz.store import open_store
from authz.store.records import NewWebhookEvent
from authz.webhooks import expiry
from authz.webhooks.delivery import Deliverer
from authz.webhooks.events import enqueue, event, stable_id
from tests.conftest import ROOT, free_port, write_policy

pytestmark = pytest.mark.both_stores
DAY, HOUR = 86400.0, 3600.0
OPEN = {"authenticators": {"public": {"type": "anonymous"}}, "routes": [{"id": "open", "require": "public"}]}
SECRET = new_secret()
KEY = parse_secret(SECRET)


# -- the receiver: a real HTTP server, verifying with the README's own snippet ---------------------

def readme_verify(secret: str):
    """``verify`` exactly as README.md shows receivers, bound to ``secret``."""
    text = (ROOT / "README.md").read_text().split("### Expiry warnings and alerts", 1)[1]
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    namespace: dict = {}
    saved = os.environ.get("AUTHZ_WEBHOOK_SECRET")
    os.environ["AUTHZ_WEBHOOK_SECRET"] = secret
    try:
        exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 — the README's own code
    finally:
        if saved is None:
            os.environ.pop("AUTHZ_WEBHOOK_SECRET")
        else:
            os.environ["AUTHZ_WEBHOOK_SECRET"] = saved
    return namespace["verify"]


class Receiver:
    """Records every request; answers 500 to the first ``fail_first``, 204 after, and
    processes each ``webhook-id`` once (as the README tells receivers to)."""

    def __init__(self, secret: str = SECRET, fail_first: int = 0) -> None:
        self.verify = readme_verify(secret)
        self.fail_first = fail_first
        self.attempts: list[dict] = []  # every request: id, status answered, verified
        self.processed: dict[str, dict] = {}  # webhook-id -> event, the first time
        self.duplicates = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    received = receiver.verify(self.headers, body)
                    verified = True
                except ValueError:
                    received, verified = None, False
                with receiver.lock:
                    failing = len(receiver.attempts) < receiver.fail_first
                    status = 401 if not verified else 500 if failing else 204
                    delivery = self.headers.get("webhook-id")
                    receiver.attempts.append({"id": delivery, "status": status, "verified": verified,
                                              "timestamp": self.headers.get("webhook-timestamp"), "body": body})
                    if status == 204:
                        if delivery in receiver.processed:
                            receiver.duplicates += 1
                        else:
                            receiver.processed[delivery] = received
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/authz?token=t0ps3cret"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.processed) < count:
            assert time.monotonic() < deadline, f"received {sorted(self.processed)} of {count}"
            time.sleep(0.05)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(**kwargs) -> Receiver:
        made.append(Receiver(**kwargs))
        return made[-1]

    yield make
    for r in made:
        r.close()


def outbox_events(store) -> dict[str, dict]:
    """Every event in the outbox by id, as its body says."""
    return {e.id: json.loads(e.body) for e in store.outbox.list(limit=1000)}


# -- signing and settings ------------------------------------------------------------------------------

def test_the_signature_is_standard_webhooks():
    """The Standard Webhooks libraries' own test vector (secret, id, timestamp, payload)."""
    key = parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    assert signature(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}') == (
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
    assert len(parse_secret(new_secret())) == 32


@pytest.mark.parametrize(("env", "message"), [
    ({"AUTHZ_WEBHOOK_URL": "https://hooks.example.com/x"}, "AUTHZ_WEBHOOK_SECRET is not"),
    ({"AUTHZ_WEBHOOK_URL": "http://hooks.example.com/x", "AUTHZ_WEBHOOK_SECRET": SECRET}, "must be an https://"),
    ({"AUTHZ_WEBHOOK_URL": "https://h/x", "AUTHZ_WEBHOOK_SECRET": "hunter2-hunter2-hunter2-hunter2"}, "whsec_"),
    ({"AUTHZ_WEBHOOK_URL": "https://h/x", "AUTHZ_WEBHOOK_SECRET": "whsec_c2hvcnQ="}, "holds 5 bytes"),
    ({"AUTHZ_WEBHOOK_URL": "https://h/x", "AUTHZ_WEBHOOK_SECRET": "whsec_not*base64"}, "not valid base64"),
    ({"AUTHZ_WEBHOOK_INTERVAL": "0"}, "AUTHZ_WEBHOOK_INTERVAL must be a number from 0.1"),
])
def test_webhook_settings_refuse_what_cannot_be_used(env, message):
    with pytest.raises(SettingsError, match=re.escape(message)) as caught:
        Settings.from_env(env)
    assert "hunter2" not in str(caught.value) and "not*base64" not in str(caught.value)


def test_the_secret_is_never_in_the_settings_repr():
    settings = Settings.from_env({"AUTHZ_WEBHOOK_URL": "http://127.0.0.1:9/x", "AUTHZ_WEBHOOK_SECRET": SECRET})
    assert settings.webhook_secret == SECRET and SECRET not in repr(settings)


# -- the expiry scan ---------------------------------------------------------------------------------

def test_the_scan_announces_each_crossing_once_and_never_the_key(store):
    admin = Admin(store)
    t0 = time.time()
    assert expiry.scan(store, t0) == 0  # the first look only sets the cursor
    secrets = {}
    a, secrets["a"] = admin.keys.create("partner-a", expires_at=t0 + 30 * DAY + HOUR)  # crosses 30 d at +1 h
    b, secrets["b"] = admin.keys.create("partner-b", expires_at=t0 + 7 * DAY + 2 * HOUR)  # 7 d at +2 h
    c, secrets["c"] = admin.keys.create("partner-c", env="test", expires_at=t0 + DAY + 3 * HOUR)  # 1 d at +3 h
    d, secrets["d"] = admin.keys.create("partner-d")
    d, successor, secrets["d2"] = admin.keys.rotate(d.id, 2 * HOUR)  # its grace ends at +2 h
    f, secrets["f"] = admin.keys.create("partner-f", expires_at=t0 + 4 * HOUR)  # expires at +4 h
    r, secrets["r"] = admin.keys.create("partner-r", expires_at=t0 + DAY + HOUR)
    admin.keys.revoke(r.id)  # revoked: never announced
    admin.keys.create("partner-n")  # no expiry: never announced

    assert expiry.scan(store, t0 + 1.5 * HOUR) == 1
    assert expiry.scan(store, t0 + 5 * HOUR) == 4
    assert expiry.scan(store, t0 + 5 * HOUR) == 0  # nothing new in an empty span
    events = outbox_events(store)
    by_type = sorted((e["type"], e["data"]["key_id"], e["data"].get("days")) for e in events.values())
    assert by_type == sorted([("api_key.expiring", a.id, 30), ("api_key.expiring", b.id, 7),
                              ("api_key.expiring", c.id, 1), ("api_key.grace_ended", d.id, None),
                              ("api_key.expired", f.id, None)])
    ended = next(e for e in events.values() if e["type"] == "api_key.grace_ended")
    assert ended["data"]["replaced_by"] == successor.id and ended["data"]["principal"] == "partner-d"
    # The delivery id is derived from the event: noticed again, it is the same event.
    assert stable_id("api_key.expiring", c.id, "1") in events
    text = json.dumps([e.body for e in store.outbox.list(limit=1000)])
    for record in (a, b, c, d, f):
        secret = secrets[record.principal[-1]]
        assert secret not in text and apikeys.fingerprint(secret) not in text and record.display not in text


def test_after_an_outage_a_key_gets_only_its_shortest_threshold(store):
    t0 = time.time()
    expiry.scan(store, t0)
    key, _ = Admin(store).keys.create("partner-a", expires_at=t0 + 7 * DAY + 12 * HOUR)
    assert expiry.scan(store, t0 + 6.9 * DAY) == 1  # crossed 7 d at +12 h and 1 d at +6.5 d
    [announced] = outbox_events(store).values()
    assert (announced["data"]["key_id"], announced["data"]["days"]) == (key.id, 1)


def test_two_scanners_never_both_look_at_a_span(tmp_path):
    first = open_store(tmp_path / "authz.db")
    first.migrate()
    second = open_store(tmp_path / "authz.db")
    t0 = time.time()
    expiry.scan(first, t0)
    Admin(first).keys.create("partner-a", expires_at=t0 + DAY + 60)
    seen = first.outbox.cursor(expiry.CURSOR)
    assert expiry.scan(second, t0 + 120) == 1
    # ``first`` read the cursor before ``second`` moved it: its look is refused, whole.
    assert not first.outbox.advance(expiry.CURSOR, seen, t0 + 120, [event("api_key.expiring", {}).new()])
    assert len(outbox_events(first)) == 1


# -- delivery ------------------------------------------------------------------------------------------

def test_each_event_is_accepted_once_after_a_forced_failure(store, receiver):
    hooks = receiver(fail_first=1)
    anomaly = event("api_key.anomaly", {"key_id": "key_x", "kind": "new_network"})  # how anomalies will come
    plain = event("api_key.expired", {"key_id": "key_y"}, dedupe=("key_y",))
    assert enqueue(store.outbox, [anomaly, plain, plain]) == 2  # the same id twice: kept once
    deliverer = Deliverer(store.outbox, hooks.url, KEY, first_retry=0.05)

    first = deliverer.deliver_due()
    assert (first.delivered, first.retrying) == (1, 1)
    assert store.outbox.counts().pending == 1
    time.sleep(0.1)  # the retry is due after ~0.05 s
    assert deliverer.deliver_due().delivered == 1
    assert deliverer.deliver_due().delivered == 0  # nothing left

    assert sorted(hooks.processed) == sorted([anomaly.id, plain.id]) and hooks.duplicates == 0
    failed, *_ = hooks.attempts
    assert failed["status"] == 500 and failed["verified"]
    assert [a["id"] for a in hooks.attempts].count(failed["id"]) == 2  # the same delivery id, retried
    assert all(a["verified"] for a in hooks.attempts)
    assert hooks.processed[anomaly.id] == {"type": "api_key.anomaly", "timestamp": hooks.processed[anomaly.id][
        "timestamp"], "data": {"key_id": "key_x", "kind": "new_network"}}
    retried = next(e for e in store.outbox.list() if e.id == failed["id"])
    assert (retried.state, retried.attempts, retried.last_error) == ("delivered", 2, None)
    assert store.outbox.counts().delivered == 2


def test_a_wrong_secret_is_refused_by_the_receiver_and_retried(store, receiver):
    hooks = receiver(secret=new_secret())  # the receiver has another secret
    enqueue(store.outbox, [event("api_key.expired", {"key_id": "key_y"})])
    report = Deliverer(store.outbox, hooks.url, KEY, first_retry=60).deliver_due()
    assert (report.delivered, report.retrying) == (0, 1)
    assert hooks.attempts[0]["status"] == 401 and not hooks.processed
    [kept] = store.outbox.list()
    assert (kept.state, kept.last_error) == ("pending", "HTTP 401")


def test_events_outlive_a_restart_and_an_unreachable_receiver(tmp_path, receiver, monkeypatch):
    db = tmp_path / "authz.db"
    store = open_store(db)
    store.migrate()
    down = f"http://127.0.0.1:{free_port()}/hooks?token=t0ps3cret"  # nobody listens
    enqueue(store.outbox, [event("api_key.expired", {"key_id": f"key_{i}"}) for i in range(3)])
    report = Deliverer(store.outbox, down, KEY, first_retry=0.01).deliver_due()
    assert report.retrying == 3
    errors = {e.last_error for e in store.outbox.list()}
    assert all("t0ps3cret" not in error for error in errors), errors
    del store  # the process that noticed them is gone

    hooks = receiver()
    time.sleep(0.05)
    monkeypatch.setenv("AUTHZ_WEBHOOK_URL", hooks.url)
    monkeypatch.setenv("AUTHZ_WEBHOOK_SECRET", SECRET)
    result = CliRunner().invoke(main, ["--db", str(db), "webhooks", "deliver", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["delivered"] == 3
    assert len(hooks.processed) == 3 and hooks.duplicates == 0
    listed = CliRunner().invoke(main, ["--db", str(db), "webhooks", "list"]).output
    assert listed.count(" delivered ") == 3 and "api_key.expired" in listed


def test_an_event_failing_for_three_days_is_given_up(store, receiver):
    hooks = receiver(fail_first=10)
    old = NewWebhookEvent("evt_" + "0" * 32, "api_key.expired", '{"type":"api_key.expired"}',
                          time.time() - 3 * DAY - 1)
    store.outbox.enqueue([old])
    assert Deliverer(store.outbox, hooks.url, KEY, first_retry=1).deliver_due().given_up == 1
    [gone] = store.outbox.list()
    assert (gone.state, gone.last_error) == ("failed", "HTTP 500")
    assert store.outbox.counts().failed == 1 and not store.outbox.has_due(time.time() + 10 * DAY)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_competing_deliverers_send_each_event_once(backend, tmp_path, receiver, request):
    url = str(tmp_path / "authz.db") if backend == "sqlite" else request.getfixturevalue("pg_url")
    first = open_store(url)
    first.migrate()
    hooks = receiver()
    sent = [event("api_key.expired", {"key_id": f"key_{i}"}) for i in range(60)]
    enqueue(first.outbox, sent)
    reports = []

    def deliver() -> None:
        handle = open_store(url)  # a worker of its own, with its own connections
        reports.append(Deliverer(handle.outbox, hooks.url, KEY, first_retry=60).deliver_due(max_batches=100))

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(r.delivered for r in reports) == 60
    assert sorted(hooks.processed) == sorted(e.id for e in sent)
    assert len(hooks.attempts) == 60 and hooks.duplicates == 0


def test_a_dry_run_announces_nothing(store):
    from authz.store.overlay import StandInStore

    assert enqueue(StandInStore(store).outbox, [event("api_key.anomaly", {"key_id": "key_x"})]) == 0
    assert store.outbox.counts().pending == 0


# -- the command line and /metrics ---------------------------------------------------------------------

def test_keys_expiring_lists_what_stops_working_soon(tmp_path):
    db = str(tmp_path / "authz.db")

    def cli(*args, ok=True):
        result = CliRunner().invoke(main, ["--db", db, *args])
        assert (result.exit_code == 0) == ok, result.output
        return result.output

    cli("db", "init")
    store = open_store(db)
    admin, now = Admin(store), time.time()
    soon, _ = admin.keys.create("partner-a", expires_at=now + 2 * DAY)
    later, _ = admin.keys.create("partner-b", expires_at=now + 10 * DAY)
    admin.keys.create("partner-c", expires_at=now + 20 * DAY)
    revoked, _ = admin.keys.create("partner-d", expires_at=now + DAY)
    admin.keys.revoke(revoked.id)
    rotated, _ = admin.keys.create("partner-e")
    rotated, successor, _ = admin.keys.rotate(rotated.id, 5 * DAY)

    listed = json.loads(cli("keys", "expiring", "--within", "14d", "--json"))
    assert [(k["id"], k["status"]) for k in listed] == [(soon.id, "active"), (rotated.id, "deprecated"),
                                                        (later.id, "active")]
    table = cli("keys", "expiring", "--within", "14d").splitlines()
    assert table[0].split() == ["ID", "PRINCIPAL", "ENV", "STATUS", "EXPIRES", "IN", "LAST", "USED", "ROTATION"]
    assert table[2].startswith(rotated.id) and f"-> {successor.id}" in table[2] and " 4d " in table[2]
    assert cli("keys", "expiring", "--within", "1h") == "no API key expires within 1h\n"
    for bad, message in (("14x", "'14x' is not a duration"), ("0s", "the span must be positive")):
        said = [line for line in cli("keys", "expiring", "--within", bad, ok=False).splitlines()
                if line.startswith("Error")]
        assert len(said) == 1 and message in said[0]


def gauges(text: str) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_the_expiry_gauges_count_without_a_series_per_key(store, make_client):
    admin, now = Admin(store), time.time()
    for days in (2, 5, 20, 45):
        admin.keys.create(f"partner-{days}", expires_at=now + days * DAY)
    admin.keys.create("partner-none")
    revoked, _ = admin.keys.create("partner-revoked", expires_at=now + 3 * DAY)
    admin.keys.revoke(revoked.id)
    rotated, _ = admin.keys.create("partner-rotated", expires_at=now + 6 * DAY)
    admin.keys.rotate(rotated.id, DAY)  # the deprecated one is not counted; its successor (6 d) is
    enqueue(store.outbox, [event("api_key.expired", {"key_id": "key_y"})])
    client = make_client(OPEN)
    found = gauges(client.get("/metrics").get_data(as_text=True))
    assert found[("authz_api_keys_expiring", (("within", "7d"),))] == 3
    assert found[("authz_api_keys_expiring", (("within", "30d"),))] == 4
    assert len([k for k in found if k[0] == "authz_api_keys_expiring"]) == 2
    assert found[("authz_webhook_events", (("state", "pending"),))] == 1
    assert found[("authz_webhook_events", (("state", "failed"),))] == 0
    assert found[("authz_webhook_oldest_pending_age_seconds", ())] >= 0
    assert found[("authz_store_up", ())] == 1


# -- end to end: the servers' own threads ------------------------------------------------------------

def test_servers_deliver_each_event_once_across_workers(server, store, policy_dir, receiver):
    """Three workers (granian: a thread in each; gunicorn with preload: in the master)
    scan and deliver; the receiver fails the first request. Each event is accepted once."""
    write_policy(policy_dir, OPEN)
    hooks = receiver(fail_first=1)
    admin = Admin(store)
    expiry.scan(store, time.time())  # as a server already running would have
    now = time.time()
    warned, _ = admin.keys.create("partner-a", expires_at=now + DAY + 3)  # 1 day left in 3 s
    ends, _ = admin.keys.create("partner-b", expires_at=now + 3)
    rotated, _ = admin.keys.create("partner-c")
    rotated, _, _ = admin.keys.rotate(rotated.id, 3)
    started = server(workers=3, AUTHZ_WEBHOOK_URL=hooks.url, AUTHZ_WEBHOOK_SECRET=SECRET,
                     AUTHZ_WEBHOOK_INTERVAL="0.2")
    hooks.wait_for(3)
    time.sleep(1.5)  # any duplicate would arrive within a few intervals
    assert sorted((e["type"], e["data"]["key_id"]) for e in hooks.processed.values()) == sorted([
        ("api_key.expiring", warned.id), ("api_key.expired", ends.id), ("api_key.grace_ended", rotated.id)])
    assert hooks.duplicates == 0 and all(a["verified"] for a in hooks.attempts)
    assert [a["status"] for a in hooks.attempts].count(500) == 1 and len(hooks.attempts) == 4
    assert store.outbox.counts().delivered == 3
    text = requests.get(started.url + "/metrics", timeout=5).text
    found = gauges(text)
    assert found[("authz_webhook_deliveries_total", (("result", "delivered"),))] == 3
    assert found[("authz_webhook_deliveries_total", (("result", "retrying"),))] == 1
    assert found[("authz_api_keys_expiring", (("within", "7d"),))] == 1  # partner-a's key
