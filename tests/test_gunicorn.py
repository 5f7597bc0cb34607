"""Under a real gunicorn with several workers, changes made with the CLI take effect on
the very next request in every worker: revoked and expired keys, disabled users,
changed passwords. The access log records which worker (pid) answered each request,
so the test proves every worker was warm before the change and refused after it.
On PostgreSQL (AUTHZ_TEST_STORE) a change reaches each worker through the change log a
moment later: the tests wait until every worker answers as expected, then insist on it."""

import base64
import json
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.conftest import BIN, ROOT, propagated_to_every_worker, write_policy

pytestmark = pytest.mark.both_stores

POLICY = json.loads((ROOT / "policies" / "api.json").read_text())
ROUNDS = 40


def authz(store, *args, input=None):
    result = subprocess.run([str(BIN / "authz"), "--db", store.url, *args, "--json"],
                            input=input, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def ask(server, headers, uri="/v1/orders"):
    base = {"X-Original-URI": uri, "X-Original-Method": "GET", "Connection": "close"}
    return requests.get(server.url + "/auth-request", headers={**base, **headers}, timeout=5)


def pids_since(server, mark: int) -> set[str]:
    lines = server.access_log.read_text().splitlines()[mark:]
    return {line.split()[0] for line in lines if "/auth-request" in line}


def burst(server, headers, expect_status, expect_reason=None) -> set[str]:
    """ROUNDS requests, eight at a time so that every worker gets some; returns their pids."""
    mark = len(server.access_log.read_text().splitlines())
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: ask(server, headers), range(ROUNDS)))
    for r in answers:
        assert r.status_code == expect_status, (r.status_code, r.headers.get("X-Auth-Reason"))
        if expect_reason:
            assert r.headers["X-Auth-Reason"] == expect_reason
    time.sleep(0.2)  # access log lines are written after the response
    return pids_since(server, mark)


def every_worker(server, headers, expect_status, expect_reason=None, workers=3) -> set[str]:
    """Bursts until every worker has answered (at most 20): each answer as expected
    (on PostgreSQL, once every worker learnt of the last write: ``propagated_to_every_worker``)."""
    propagated_to_every_worker(server, {"X-Original-URI": "/v1/orders", **headers}, expect_status)
    seen: set[str] = set()
    for _ in range(20):
        seen |= burst(server, headers, expect_status, expect_reason)
        if len(seen) >= workers:
            break
    return seen


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_changes_apply_on_the_next_request_in_every_worker(store, policy_dir, gunicorn):
    write_policy(policy_dir, POLICY)
    revoked = authz(store, "keys", "create", "--principal", "partner-a", "--scope", "orders:read")
    expiring = authz(store, "keys", "create", "--principal", "partner-b", "--scope", "orders:read",
                     "--expires-in", "4s")
    authz(store, "users", "add", "alice", "--password-stdin", "--scope", "x", input="old-pw\n")
    authz(store, "users", "add", "bob", "--password-stdin", input="bob-pw\n")
    server = gunicorn(workers=3)

    assert len(every_worker(server, {"X-API-Key": revoked["key"]}, 200)) == 3
    assert len(every_worker(server, basic("alice", "old-pw"), 200)) == 3
    assert len(every_worker(server, basic("bob", "bob-pw"), 200)) == 3

    authz(store, "keys", "revoke", revoked["id"])
    assert len(every_worker(server, {"X-API-Key": revoked["key"]}, 401, "credential_revoked")) == 3

    authz(store, "users", "passwd", "alice", "--password-stdin", input="new-pw\n")
    assert len(every_worker(server, basic("alice", "old-pw"), 401, "credentials_invalid")) == 3
    burst(server, basic("alice", "new-pw"), 200)

    authz(store, "users", "disable", "bob")
    assert len(every_worker(server, basic("bob", "bob-pw"), 401, "credential_revoked")) == 3

    while time.time() < expiring["expires_at"] + 0.05:
        time.sleep(0.05)
    burst(server, {"X-API-Key": expiring["key"]}, 401, "credential_expired")


def test_cli_writes_while_workers_serve(store, policy_dir, gunicorn):
    """WAL: readers in every worker keep answering while the CLI writes, and last-use
    stamps from the workers land in the store."""
    write_policy(policy_dir, POLICY)
    key = authz(store, "keys", "create", "--principal", "partner-a", "--scope", "orders:read")
    server = gunicorn(workers=2)
    failures: list[str] = []
    stop = threading.Event()

    def load():
        session = requests.Session()
        while not stop.is_set():
            r = session.get(server.url + "/auth-request", timeout=5, headers={
                "X-Original-URI": "/v1/orders", "X-Original-Method": "GET", "X-API-Key": key["key"]})
            if r.status_code != 200:
                failures.append(f"{r.status_code} {r.headers.get('X-Auth-Reason')}")

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for i in range(15):
            authz(store, "keys", "create", "--principal", f"writer-{i}")
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert failures == []
    deadline = time.time() + 5
    while time.time() < deadline:
        listed = [k for k in authz(store, "keys", "list") if k["id"] == key["id"]]
        if listed[0]["last_used_at"]:
            break
        time.sleep(0.1)
    assert listed[0]["last_used_at"] is not None


def test_gunicorn_refuses_to_start_on_a_broken_policy(store, policy_dir, servers, tmp_path):
    from tests.conftest import free_port, gunicorn_env

    (policy_dir / "bad.json").write_text('{"routes": [{"id": "r", "require": "staf"}]}')
    port = free_port()
    server = servers([str(BIN / "gunicorn"), "--workers", "2", "--bind", f"127.0.0.1:{port}", "--preload",
                      "wsgi:app"], port, env=gunicorn_env(store, policy_dir), log=tmp_path / "bad.log")
    assert server.proc.wait(30) != 0
    assert "/routes/0/require: unknown authenticator 'staf'" in server.output()


def test_revoked_jti_is_refused_by_every_worker(store, policy_dir, gunicorn):
    from tests.idp import AUDIENCE, ISSUER, mint, public_pem, rsa_key

    key = rsa_key()
    (policy_dir / "keys").mkdir()
    (policy_dir / "keys" / "idp.pem").write_bytes(public_pem(key))
    write_policy(policy_dir, {
        "authenticators": {"user_jwt": {"type": "jwt", "issuer": ISSUER, "audience": AUDIENCE,
                                        "algorithms": ["RS256"], "public_key_file": "keys/idp.pem"}},
        "routes": [{"id": "orders", "match": {"paths": ["/v1/orders"]}, "require": "user_jwt"}]})
    token = mint(key, kid=None, jti="session-42")
    server = gunicorn(workers=3)
    assert len(every_worker(server, {"Authorization": f"Bearer {token}"}, 200)) == 3
    authz(store, "tokens", "revoke", "--jti", "session-42", "--issuer", ISSUER)
    assert len(every_worker(server, {"Authorization": f"Bearer {token}"}, 401, "credential_revoked")) == 3


def test_unknown_kid_during_a_jwks_outage_is_upstream_unavailable_on_every_worker(store, policy_dir, gunicorn):
    """A kid none of the workers has seen, asked while the IdP is down: 500
    upstream_unavailable from every worker, whatever each one fetched before."""
    from tests.idp import AUDIENCE, ISSUER, IdentityProvider, mint, public_jwk, rsa_key

    known, rotated = rsa_key(), rsa_key()
    idp = IdentityProvider()
    idp.jwks = {"keys": [public_jwk(known, "k1", "RS256")]}
    try:
        write_policy(policy_dir, {
            "authenticators": {"user_jwt": {"type": "jwt", "issuer": ISSUER, "audience": AUDIENCE,
                                            "algorithms": ["RS256"], "jwks_uri": idp.url + "/jwks",
                                            "refetch_interval": 1}},
            "routes": [{"id": "orders", "match": {"paths": ["/v1/orders"]}, "require": "user_jwt"}]})
        server = gunicorn(workers=3)
        good = {"Authorization": f"Bearer {mint(known, kid='k1')}"}
        assert len(every_worker(server, good, 200)) == 3  # every worker holds the keyset
        idp.down = True
        time.sleep(1.2)  # past refetch_interval everywhere
        unseen = {"Authorization": f"Bearer {mint(rotated, kid='k-never-seen')}"}
        assert len(every_worker(server, unseen, 500, "upstream_unavailable")) == 3
        burst(server, good, 200)  # known keys keep verifying through the outage
    finally:
        idp.stop()
