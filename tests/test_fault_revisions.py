"""Revision monotonicity (issue 10, point 1): with the policy files broken, a worker
that is killed and respawned — or every worker after SIGHUP — serves the newest good
revision (from the store's snapshots), never the older one the master loaded at boot.

Run under gunicorn with the shipped deploy/gunicorn.conf.py (``preload_app``: workers
are forked from a master that holds the boot revision) and under granian (``authz
serve``: the master loads the policy once before forking; SIGHUP replaces the workers
one by one)."""

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import requests

from authz.admin.policy_snapshots import save_snapshot
from authz.authenticators import Context
from authz.engine import DecisionEngine
from authz.policy import load_policy
from authz.policy.reloader import PolicyReloader

pytestmark = pytest.mark.both_stores

OPEN = {"authenticators": {"public": {"type": "anonymous"}},
        "routes": [{"id": "orders", "match": {"paths": ["/v1/**"]}, "require": "public"}]}
CLOSED = {"authenticators": {"partner": {"type": "api_key"}},
          "routes": [{"id": "orders", "match": {"paths": ["/v1/**"]}, "require": "partner"}]}


def install(policy_dir: Path, document: dict) -> None:
    tmp = policy_dir / ".policy.json.tmp"
    tmp.write_text(json.dumps(document))
    tmp.replace(policy_dir / "policy.json")


def break_files(policy_dir: Path) -> None:
    (policy_dir / "policy.json").write_text('{"routes": [{"id": "orders", "require": "nobody"}]}')


def ask(session: requests.Session, server) -> requests.Response:
    return session.get(server.url + "/auth-request", timeout=10, headers={
        "X-Original-Method": "GET", "X-Original-URI": "/v1/orders", "Connection": "close"})


def wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def test_respawned_and_sighup_workers_serve_the_newest_good_revision(store, policy_dir, server):
    install(policy_dir, OPEN)
    server = server(workers=3)
    session = requests.Session()
    assert ask(session, server).status_code == 200
    install(policy_dir, CLOSED)  # R2 denies what R1 (the master's boot revision) allowed
    r2 = load_policy(policy_dir, Context(store=store)).revision
    time.sleep(1.5)
    wait_for(lambda: all(ask(session, server).status_code == 401 for _ in range(30)))
    break_files(policy_dir)
    time.sleep(1.5)

    wrong_allows, answers, revisions = [], [0], set()
    stop = threading.Event()

    def load() -> None:
        s = requests.Session()
        while not stop.is_set():
            try:
                r = ask(s, server)
            except requests.RequestException:
                continue  # a worker killed mid-request: no answer is not an allow
            answers[0] += 1
            if r.status_code == 200:
                wrong_allows.append(r.headers.get("X-Auth-Route"))

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    master = server.proc.pid
    try:
        before = server.workers()
        assert len(before) == 3
        os.kill(sorted(before)[0], signal.SIGKILL)  # a worker dies (as on a timeout) and is respawned
        wait_for(lambda: len(server.workers() - before) >= 1)
        time.sleep(1.0)
        before = server.workers()
        os.kill(master, signal.SIGHUP)  # every worker replaced (granian: one by one, 3.5 s apart)
        wait_for(lambda: not (server.workers() & before) and len(server.workers()) == 3, timeout=40)
        time.sleep(1.5)
        for _ in range(10):
            body = requests.get(server.url + "/readyz", timeout=5).json()
            revisions.add(body["revision"])
            assert body["status"] == "degraded" and "broken" in body["detail"]
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    assert answers[0] > 50
    assert wrong_allows == []
    assert revisions == {r2}
    assert "serving the last good revision " + r2 in server.output()


def test_a_reverted_revision_becomes_the_newest_again(store, policy_dir):
    """Files R1 → R2 → R1 (a revert), then broken: R1 is the newest good revision, also
    for a process that never saw R2 and for one that booted on R2."""
    install(policy_dir, OPEN)
    context = Context(store=store)
    r1 = load_policy(policy_dir, context)
    save_snapshot(store.policy_snapshots, r1.revision, str(policy_dir.resolve()), r1.contents)
    watcher = PolicyReloader(DecisionEngine(r1), policy_dir, context)
    sleeper = PolicyReloader(DecisionEngine(r1), policy_dir, context)  # never looks while R2 is up
    install(policy_dir, CLOSED)
    assert watcher.check(force=True)
    r2 = watcher.engine.policy
    late = PolicyReloader(DecisionEngine(r2), policy_dir, context)
    install(policy_dir, OPEN)
    assert watcher.check(force=True)
    assert sleeper.check(force=True) is False  # same revision as it serves
    break_files(policy_dir)
    for reloader in (watcher, sleeper, late):
        reloader.check(force=True)
        assert reloader.engine.policy.revision == r1.revision
        assert reloader.status()["status"] == "degraded"
