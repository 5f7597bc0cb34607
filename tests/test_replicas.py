"""Replicas of a PostgreSQL store (issue 14) in one process: credential reads from memory,
kept current by the change log, a flood of invalid keys kept away from the database, and
the staleness bound — denied past it, recovered by itself. The end-to-end behaviour with
three servers is tests/test_replicas_e2e.py; the timings are bench/replicas.py's."""

from __future__ import annotations

import time

import psycopg
import pytest

from authz.admin import Admin
from authz.config import Settings
from authz.credentials import apikeys
from authz.store import StoreUnavailable, StoreUnreachable, open_store, serving_store
from authz.store.replica import MISS_POLL_SECONDS, Replica


def _sessions(url: str) -> int:
    """Connections to the database of ``url`` but this one: what its stores hold open."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND pid <> pg_backend_pid()").fetchone()[0]


def eventually(check, timeout: float = 5.0) -> None:
    """``check()`` true within ``timeout`` (a behaviour, not a timing: bench/ measures)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "did not happen"
        time.sleep(0.01)


@pytest.fixture
def shared(pg_url):
    store = open_store(pg_url, last_used_interval=3600)
    store.migrate()
    Admin(store).signing_keys.ensure(60)
    yield store
    store.close()


@pytest.fixture
def replica(pg_url, shared) -> Replica:
    served = serving_store(open_store(pg_url, serving=True), max_staleness=30)
    assert isinstance(served, Replica)
    yield served
    served.close()  # else its follower and pool outlive the test, and the cluster


def test_sqlite_is_served_as_it_is(tmp_path):
    store = open_store(tmp_path / "a.db")
    assert serving_store(store, 30) is store


def test_reads_come_from_memory_and_changes_arrive_by_the_log(shared, replica):
    admin = Admin(shared)
    record, secret = admin.keys.create("partner-a")
    admin.users.add("alice", "pw")
    fp = apikeys.fingerprint(secret)
    assert replica.keys.find(fp).status == "active" and replica.principals.find_user("alice")
    queries = replica.queries
    for _ in range(100):
        assert replica.keys.find(fp).status == "active"
        assert not replica.principals.find_user("alice").disabled
        assert not replica.revocations.is_revoked("jti", "j-1", "https://idp")
    assert replica.queries == queries  # cached: no store read per request
    admin.keys.revoke(record.id)
    admin.users.set_disabled("alice", True)
    admin.tokens.revoke("j-1", "https://idp", keep_for=60)
    eventually(lambda: replica.keys.find(fp).status == "revoked")
    eventually(lambda: replica.principals.find_user("alice").disabled)
    eventually(lambda: replica.revocations.is_revoked("jti", "j-1", "https://idp"))
    eventually(lambda: replica.keys.find(fp).principal_disabled is False)


def test_disabling_a_principal_reaches_its_cached_keys_and_certificates(shared, replica):
    admin = Admin(shared)
    _, secret = admin.keys.create("svc")
    fp = "ab" * 32
    admin.certificates.register("svc", fp)
    assert not replica.keys.find(apikeys.fingerprint(secret)).principal_disabled
    assert replica.certificates.check(fp, "", "").principal == "svc"
    admin.users.set_disabled("svc", True)
    eventually(lambda: replica.keys.find(apikeys.fingerprint(secret)).principal_disabled)
    eventually(lambda: replica.certificates.check(fp, "", "").principal_disabled)
    admin.certificates.revoke_fingerprint(fp)
    eventually(lambda: replica.certificates.check(fp, "", "").revoked)
    issuer, other = "CN=Mesh Issuing CA,O=Corp", "cd" * 32
    assert not replica.certificates.is_revoked(other, issuer, "1a")
    admin.certificates.revoke_serial(issuer, "1A")  # by issuer and serial: any certificate of that pair
    eventually(lambda: replica.certificates.is_revoked(other, issuer, "1a"))
    assert not replica.certificates.is_revoked(other, issuer, "1b")


def test_a_new_key_works_at_once_and_invalid_keys_do_not_reach_the_store(shared, replica):
    admin = Admin(shared)
    assert replica.keys.find(apikeys.fingerprint(apikeys.generate("live"))) is None  # warm, following
    _, secret = admin.keys.create("partner-a")
    time.sleep(MISS_POLL_SECONDS)  # a miss may catch up again: the key is known after one lookup
    assert replica.keys.find(apikeys.fingerprint(secret)).principal == "partner-a"
    queries, polls = replica.queries, _polls(replica)
    started = time.monotonic()
    for _ in range(2000):
        assert replica.keys.find(apikeys.fingerprint(apikeys.generate("live"))) is None
    elapsed = time.monotonic() - started
    assert replica.queries == queries  # no key lookup for any of them
    assert _polls(replica) - polls <= elapsed / 0.05 + 2  # the change log at most every 50 ms


def test_a_key_created_just_after_the_follower_read_the_log_works_at_once(shared, pg_url, request):
    """The follower's own reads of the change log (its poll, a notification) do not use
    up the misses' budget: a key made right after one is found on its first request."""
    replica = Replica(open_store(pg_url, serving=True), 30, listener=None, poll_seconds=3600)
    request.addfinalizer(replica.close)
    assert replica.problem() is None  # following: the whole state loaded, the follower asleep
    replica.catch_up()  # as the follower does on its poll or a notification, just now
    _, secret = Admin(shared).keys.create("partner-a")
    assert replica.keys.find(apikeys.fingerprint(secret)).principal == "partner-a"


def _polls(replica: Replica) -> int:
    return replica.miss_polls


def test_signing_keys_and_jwks_are_the_stores(shared, replica):
    admin = Admin(shared)
    first = replica.signing_keys.active()
    assert first.kid == shared.signing_keys.active().kid
    rotation = admin.signing_keys.rotate(60)
    eventually(lambda: replica.signing_keys.active().kid == rotation.kid)
    assert [k["kid"] for k in replica.signing_keys.published()] == [rotation.kid, first.kid]


def test_past_the_staleness_bound_the_store_is_denied_and_it_recovers(pg_cluster, shared, pg_url, request):
    admin = Admin(shared)
    _, secret = admin.keys.create("partner-a")
    fp = apikeys.fingerprint(secret)
    replica = Replica(open_store(pg_url, serving=True), max_staleness=1.5, listener=None, poll_seconds=0.2)
    request.addfinalizer(replica.close)
    assert replica.keys.find(fp).status == "active" and replica.problem() is None
    pg_cluster.stop()
    try:
        assert replica.keys.find(fp).status == "active"  # from memory, within the bound
        eventually(lambda: replica.problem() is not None, timeout=10)
        with pytest.raises(StoreUnreachable, match="not confirmed current"):
            replica.keys.find(fp)
        with pytest.raises(StoreUnreachable):
            replica.revocations.is_revoked("jti", "x")
    finally:
        pg_cluster.start()
    eventually(lambda: replica.problem() is None, timeout=15)
    assert replica.keys.find(fp).status == "active"


def test_a_closed_replica_denies_and_leaves_no_connection_behind(shared, pg_url):
    """Closing stops the follower and the pool for good: nothing reconnects in the
    background (a pool left open retries a server that is gone, for hours)."""
    _, secret = Admin(shared).keys.create("partner-a")
    replica = serving_store(open_store(pg_url, serving=True), max_staleness=30)
    assert replica.keys.find(apikeys.fingerprint(secret)).status == "active"  # following: pool and listener open
    assert _sessions(pg_url) >= 2
    shared.close()
    replica.close()
    for closed in (replica.keys, replica.base.keys, shared.keys):  # no pool or connection made afresh
        with pytest.raises(StoreUnavailable, match="closed"):
            closed.find(apikeys.fingerprint(secret))
    assert "closed" in replica.problem()
    eventually(lambda: _sessions(pg_url) == 0)
    time.sleep(2 * replica.poll_seconds)  # a follower that woke up again would reconnect now
    assert _sessions(pg_url) == 0


def test_a_refused_start_leaves_no_connection_behind(shared, pg_url, tmp_path):
    """A policy that does not load (and no snapshot to serve instead): the start is
    refused, and the pool it opened to look for a snapshot is closed, not left retrying."""
    from authz.policy import PolicyError
    from authz.service import build_state

    (tmp_path / "p.json").write_text('{"routes": [{"id": "x", "require": "nobody"}]}')
    with pytest.raises(PolicyError):
        build_state(Settings(db_path=pg_url, policy_dir=tmp_path, decision_log="off"))
    shared.close()
    eventually(lambda: _sessions(pg_url) == 0)
