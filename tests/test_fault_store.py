"""Store identity (issue 10, point 2) under real workers, on gunicorn and on granian: a
store file that is replaced, deleted, truncated or overwritten is noticed within a
second; a valid replacement is reopened, anything else fails closed (500
``internal_error`` for store-backed credentials, ``/readyz`` 503, one log line per
worker and episode, no tracebacks), no empty store is ever created, and service
recovers by itself."""

import os
import shutil
import sqlite3
import threading
import time
from collections import Counter

import pytest
import requests

from authz.admin import Admin
from tests.conftest import write_policy
from tests.test_gunicorn import POLICY, authz

pytestmark = [pytest.mark.both_stores,
              pytest.mark.sqlite_only("the SQLite file replaced, deleted, truncated or corrupted under the servers")]

ANON = {"id": "public-probe", "match": {"paths": ["/public"]}, "require": "public"}


def backup(store, target) -> None:
    """An operator's backup: SQLite's online backup into a separate file."""
    with sqlite3.connect(store.path) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    dst.close()


def ask(session, server, key: str, uri: str = "/v1/orders") -> requests.Response:
    return session.get(server.url + "/auth-request", timeout=10, headers={
        "X-Original-Method": "GET", "X-Original-URI": uri, "X-API-Key": key})


class Load:
    """Three client threads asking with ``key``; every status counted, allows stamped."""

    def __init__(self, server, key: str) -> None:
        self.server, self.key = server, key
        self.statuses: Counter = Counter()
        self.allows: list[float] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run) for _ in range(3)]

    def _run(self) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            r = ask(session, self.server, self.key)
            self.statuses[(r.status_code, r.headers.get("X-Auth-Reason"))] += 1
            if r.status_code == 200:
                self.allows.append(time.monotonic())

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(15)


def policy_with_public(policy_dir) -> None:
    doc = {**POLICY, "authenticators": {**POLICY["authenticators"], "public": {"type": "anonymous"}},
           "routes": [ANON, *POLICY["routes"]]}
    write_policy(policy_dir, doc)


def test_a_store_replaced_by_a_backup_is_reopened(store, policy_dir, server, tmp_path):
    write_policy(policy_dir, POLICY)
    key = authz(store, "keys", "create", "--principal", "partner-a", "--scope", "orders:read")
    backup(store, tmp_path / "restore.db")
    server = server(workers=3)
    with Load(server, key["key"]) as load:
        time.sleep(1.0)
        os.replace(tmp_path / "restore.db", store.path)  # `mv backup.db authz.db`
        time.sleep(1.5)  # noticed within a second
        authz(store, "keys", "revoke", key["id"])
        revoked_at = time.monotonic()
        time.sleep(3.0)
    wrong = [t for t in load.allows if t > revoked_at]
    assert wrong == [], f"{len(wrong)} allows of a revoked key"
    assert load.statuses[(401, "credential_revoked")] > 20
    assert "was replaced by another valid store; reopened it" in server.output()
    assert "Traceback" not in server.output()


def test_a_deleted_store_fails_closed_and_recovers(store, policy_dir, server, tmp_path):
    policy_with_public(policy_dir)
    key = authz(store, "keys", "create", "--principal", "partner-a", "--scope", "orders:read")
    server = server(workers=3)
    kept = tmp_path / "kept.db"
    session = requests.Session()
    with Load(server, key["key"]) as load:
        time.sleep(1.0)
        backup(store, kept)
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(f"{store.path}{suffix}"):
                os.unlink(f"{store.path}{suffix}")
        deleted_at = time.monotonic()
        time.sleep(2.0)
        ready = requests.get(server.url + "/readyz", timeout=5)
        assert ready.status_code == 503 and "deleted" in ready.json()["store"]
        # routes that need no store keep answering
        assert requests.get(server.url + "/auth-request", timeout=5, headers={
            "X-Original-Method": "GET", "X-Original-URI": "/public"}).status_code == 200
        assert not store.path.exists(), "a worker created an empty store"
        during = sum(1 for t in load.allows if deleted_at + 1.0 < t)
        shutil.copy(kept, store.path)  # the operator restores the file
        time.sleep(1.5)
        authz(store, "keys", "revoke", key["id"])
        revoked_at = time.monotonic()
        time.sleep(2.0)
        after = [t for t in load.allows if t > revoked_at]
    assert during == 0, f"{during} allows with no store at all"
    assert after == []
    assert load.statuses[(500, "internal_error")] > 20
    assert load.statuses[(401, "credential_revoked")] > 20
    assert ask(session, server, "sk_live_" + "x" * 40).status_code == 401
    assert requests.get(server.url + "/readyz", timeout=5).status_code == 200
    output = server.output()
    assert "Traceback" not in output
    assert 1 <= output.count("was deleted") <= 3 * 2, output  # once per worker and episode
    assert "reopened it" in output


def test_a_truncated_or_overwritten_store_fails_closed_without_a_traceback_per_request(
        store, policy_dir, server, tmp_path):
    write_policy(policy_dir, POLICY)
    key = authz(store, "keys", "create", "--principal", "partner-a", "--scope", "orders:read")
    for i in range(200):  # a store of some pages, so that truncation cuts real data
        (authz(store, "keys", "create", "--principal", f"filler-{i}") if i < 3
         else Admin(store).keys.create(f"filler-{i}"))
    with sqlite3.connect(store.path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    kept = tmp_path / "kept.db"
    backup(store, kept)
    server = server(workers=3)
    with Load(server, key["key"]) as load:
        time.sleep(1.0)
        os.truncate(store.path, 8192)
        broken_at = time.monotonic()
        time.sleep(2.0)
        assert "truncated" in requests.get(server.url + "/readyz", timeout=5).json()["store"]
        with open(store.path, "r+b") as f:  # then garbage over the header
            f.write(os.urandom(4096))
        time.sleep(1.5)
        assert requests.get(server.url + "/readyz", timeout=5).status_code == 503
        during = sum(1 for t in load.allows if t > broken_at + 1.0)
        os.replace(shutil.copy(kept, tmp_path / "again.db"), store.path)
        time.sleep(1.5)
        before_end = load.statuses[(200, None)]
        time.sleep(1.0)
        recovered = load.statuses[(200, None)] - before_end
    assert during == 0
    assert recovered > 10
    output = server.output()
    assert "Traceback" not in output
    assert output.count("\n") < 60, output  # a few lines per worker, not one per request


def test_corruption_inside_the_file_is_logged_once_per_episode(store, tmp_path, caplog):
    """A store whose header is fine but whose pages are not: every query fails (500 for
    the request), and the log says so once, not once per request or per check."""
    import logging

    from authz.store import StoreUnavailable, open_store

    for i in range(50):
        Admin(store).keys.create(f"p{i}")
    with sqlite3.connect(store.path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page = 4096
    size = os.path.getsize(store.path)
    with open(store.path, "r+b") as f:
        f.seek(page)
        f.write(os.urandom(size - page))
    serving = open_store(store.path, serving=True)
    failures = 0
    with caplog.at_level(logging.WARNING, logger="authz.store"):
        for _ in range(8):
            for _ in range(20):
                try:
                    serving.keys.find("0" * 64)
                except StoreUnavailable:
                    failures += 1
            time.sleep(0.3)  # past the identity check interval
    assert failures == 160
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1, caplog.text
