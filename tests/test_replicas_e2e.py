"""Three authz instances (two workers each, ``authz serve``) on one PostgreSQL (issue 14):
a revocation of each kind made with the CLI (API key, user disabled, password changed,
jti, client certificate) is refused by every worker of every instance soon after the
CLI returns; with PostgreSQL stopped, decisions are served from memory
until the staleness bound, then fail closed with 500 ``upstream_unavailable`` (never an
allow of a revoked credential), and every instance recovers by itself when it returns.
Behaviour only: bench/replicas.py measures the times (bench/RESULTS.md)."""

from __future__ import annotations

import base64
import http.client
import json
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest

from authz.credentials.devpki import Issued
from tests.conftest import BIN, ROOT, Server, ask_on_a_worker, free_port, worker_holding, write_policy
from tests.pki import Pki

PKI = Pki()  # the mesh CA of the /cert route: root → issuing CA → client leaves

POLICY = {
    "authenticators": {"partner_key": {"type": "api_key", "realm": "partners"},
                       "staff": {"type": "basic", "realm": "staff"},
                       "user_jwt": {"type": "jwt", "issuer": "https://idp.example", "audience": "api",
                                    "algorithms": ["RS256"], "public_key_file": "keys/idp.pem"},
                       "mesh": {"type": "mtls", "ca_file": "keys/mesh-ca.pem", "cert_sources": ["nginx"],
                                "intermediates_file": "keys/mesh-issuing.pem"}},
    "routes": [{"id": "keys", "match": {"paths": ["/key"]}, "require": "partner_key"},
               {"id": "staff", "match": {"paths": ["/staff"]}, "require": "staff"},
               {"id": "jwt", "match": {"paths": ["/jwt"]}, "require": "user_jwt"},
               {"id": "cert", "match": {"paths": ["/cert"]}, "require": "mesh"}],
}


def write_fleet_policy(policy_dir: Path):
    """POLICY with its key files (the IdP's public key, the mesh CA and its issuing CA);
    returns a function minting the IdP's tokens."""
    from tests.idp import mint, public_pem, rsa_key

    (policy_dir / "keys").mkdir(parents=True)
    idp_key = rsa_key()
    (policy_dir / "keys" / "idp.pem").write_bytes(public_pem(idp_key))
    (policy_dir / "keys" / "mesh-ca.pem").write_bytes(PKI.root.pem)
    (policy_dir / "keys" / "mesh-issuing.pem").write_bytes(PKI.intermediate.pem)
    write_policy(policy_dir, POLICY)
    return lambda **claims: mint(idp_key, kid=None, iss="https://idp.example", aud="api", **claims)


def nginx_cert(leaf: Issued) -> dict[str, str]:
    """The headers nginx's mTLS door sends (deploy/nginx/authz-mtls.conf): the leaf alone,
    ``$ssl_client_escaped_cert``, with ``$ssl_client_verify`` beside it."""
    return {"X-SSL-Client-Cert": quote(leaf.pem.decode(), safe=""), "X-SSL-Client-Verify": "SUCCESS"}


def cli(url: str, *args: str, input: str | None = None) -> dict:
    done = subprocess.run([str(BIN / "authz"), "--db", url, *args, "--json"], input=input, capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if done.stdout.strip() else {}


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclass
class Answers:
    """When each worker (by pid) first answered the expected status, in seconds from the
    first question, and how long that answering request took (its own work: a KDF run)."""

    at: dict[int, float] = field(default_factory=dict)
    took: dict[int, float] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        """Until every worker of every instance had answered so (the slowest worker)."""
        return max(self.at.values())

    @property
    def slowest_took(self) -> float:
        """How long the slowest worker's answering request itself took."""
        return self.took[max(self.at, key=self.at.__getitem__)]


class Connections:
    """Kept-alive connections to each worker process of one instance, as a proxy keeps its
    connections to authz: a question then reaches the worker it is meant for, on a
    connection that is already open. The kernel hands each new connection to a worker of
    its choosing, so connections are opened until the wanted worker holds one."""

    def __init__(self, instance: Server) -> None:
        self.instance = instance
        self.held: dict[int, http.client.HTTPConnection] = {}
        self.lock = threading.Lock()  # one connecting at a time (a connection may land on another's worker)

    def to(self, pid: int, timeout: float) -> http.client.HTTPConnection:
        with self.lock:
            deadline = time.monotonic() + timeout
            while pid not in self.held:
                assert time.monotonic() < deadline, f"no connection reached worker {pid} of {self.instance.url}"
                conn = http.client.HTTPConnection("127.0.0.1", self.instance.port, timeout=timeout)
                conn.connect()
                conn.auto_open = 0  # never reconnect by itself: that could reach another worker
                holder = worker_holding(self.instance, conn.sock.getsockname()[1], timeout)
                if holder in self.held:
                    conn.close()
                else:
                    self.held[holder] = conn
            return self.held[pid]

    def ask(self, pid: int, headers: dict[str, str], timeout: float = 10.0) -> int:
        """``GET /auth-request`` on worker ``pid``; its status."""
        for attempt in (1, 2):
            conn = self.to(pid, timeout)
            try:
                conn.request("GET", "/auth-request", headers=headers)
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                self.drop(pid)  # closed while idle (the server's header-read deadline): connect again
                if attempt == 2:
                    raise
                continue
            if conn.sock is None:  # the server closed it after answering
                self.drop(pid)
            return response.status
        raise AssertionError("unreachable")

    def drop(self, pid: int) -> None:
        with self.lock:
            conn = self.held.pop(pid, None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        for pid in list(self.held):
            self.drop(pid)


class Fleet:
    """``count`` instances of ``authz serve --workers 2`` on one store URL."""

    def __init__(self, servers, url: str, policy_dir: Path, logs: Path, count: int = 3, **env: str) -> None:
        import os

        environment = {k: v for k, v in os.environ.items() if not k.startswith("AUTHZ_")}
        environment.update(AUTHZ_DB=url, AUTHZ_POLICY_DIR=str(policy_dir), AUTHZ_DECISION_LOG="off",
                           AUTHZ_LAST_USED_INTERVAL="1", **env)
        environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.instances = []
        for _ in range(count):
            port = free_port()
            self.instances.append(servers([str(BIN / "authz"), "serve", "--bind", f"127.0.0.1:{port}",
                                           "--workers", "2"], port, env=environment, cwd=ROOT,
                                          log=logs / f"serve-{port}.log"))
        for instance in self.instances:
            instance.wait()
        self.connections = [Connections(instance) for instance in self.instances]

    def every_worker(self, path: str, headers: dict[str, str], expect: int, timeout: float = 10.0) -> float:
        """Ask until every worker of every instance answered ``expect``; seconds it took."""
        return self.answers(path, headers, expect, timeout).seconds

    def answers(self, path: str, headers: dict[str, str], expect: int, timeout: float = 10.0) -> Answers:
        """Ask every worker of every instance at once (a thread each, on its kept-alive
        connection, one question after another) until it answered ``expect``; when each
        first did.

        Side by side, so that one worker's answer (a password check costs a KDF run) does
        not delay the asking of another: the time is the slowest worker's, not a sum."""
        started = time.monotonic()
        answers = Answers()
        request = {"X-Original-Method": "GET", "X-Original-URI": path, **headers}
        failures: list[str] = []

        def ask(connections: Connections, pid: int) -> None:
            while time.monotonic() - started < timeout:
                asked = time.monotonic()
                try:
                    status = connections.ask(pid, request, timeout)
                except (OSError, http.client.HTTPException, AssertionError) as exc:
                    failures.append(f"worker {pid} of {connections.instance.url}: {exc!r}")
                    return
                if status == expect:
                    answered = time.monotonic()
                    answers.at[pid], answers.took[pid] = answered - started, answered - asked
                    return
            failures.append(f"worker {pid} of {connections.instance.url} still answers otherwise")

        workers = [(connections, pid) for connections in self.connections for pid in connections.instance.workers()]
        assert len(workers) == 2 * len(self.instances), "an instance is not running both of its workers"
        threads = [threading.Thread(target=ask, args=worker) for worker in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not failures, "; ".join(failures)
        return answers

    def close(self) -> None:
        for connections in self.connections:
            connections.close()


@pytest.fixture
def fleet_setup(pg_url, policy_dir, tmp_path):
    mint = write_fleet_policy(policy_dir)
    cli(pg_url, "db", "init")
    return mint


def test_revocations_of_every_kind_reach_every_worker_of_every_instance(pg_url, policy_dir, tmp_path, servers,
                                                                         fleet_setup):
    key = cli(pg_url, "keys", "create", "--principal", "partner-a")
    cli(pg_url, "users", "add", "alice", "--password-stdin", input="pw-1\n")
    cli(pg_url, "users", "add", "bob", "--password-stdin", input="pw-1\n")
    token = fleet_setup(jti="session-1")
    leaf, other = PKI.leaf(), PKI.leaf()
    (tmp_path / "leaf.pem").write_bytes(leaf.pem)
    fleet = Fleet(servers, pg_url, policy_dir, tmp_path)
    cases = [("/key", {"X-API-Key": key["key"]}, ["keys", "revoke", key["id"]], None),
             ("/staff", {"Authorization": basic("alice", "pw-1")}, ["users", "disable", "alice"], None),
             ("/staff", {"Authorization": basic("bob", "pw-1")}, ["users", "passwd", "bob", "--password-stdin"],
              "pw-2\n"),
             ("/jwt", {"Authorization": f"Bearer {token}"}, ["tokens", "revoke", "--jti", "session-1"], None),
             ("/cert", nginx_cert(leaf), ["certs", "revoke", "--file", str(tmp_path / "leaf.pem")], None)]
    for path, headers, _, _ in cases:
        fleet.every_worker(path, headers, 200)  # warm: every worker holds the credential
    for path, headers, command, stdin in cases:
        cli(pg_url, *command, input=stdin)
        fleet.every_worker(path, headers, 401)
    fleet.every_worker("/staff", {"Authorization": basic("bob", "pw-2")}, 200)
    fleet.every_worker("/cert", nginx_cert(other), 200)  # the same CA's other certificate still serves
    fresh = cli(pg_url, "keys", "create", "--principal", "partner-b")  # a key made after start: known at once
    fleet.every_worker("/key", {"X-API-Key": fresh["key"]}, 200)


def test_postgresql_stopped_serves_from_memory_then_fails_closed_then_recovers(pg_cluster, pg_url, policy_dir,
                                                                                 tmp_path, servers, fleet_setup):
    good = cli(pg_url, "keys", "create", "--principal", "partner-a")
    revoked = cli(pg_url, "keys", "create", "--principal", "partner-b")
    fleet = Fleet(servers, pg_url, policy_dir, tmp_path, AUTHZ_MAX_STALENESS="3")
    fleet.every_worker("/key", {"X-API-Key": good["key"]}, 200)
    fleet.every_worker("/key", {"X-API-Key": revoked["key"]}, 200)
    cli(pg_url, "keys", "revoke", revoked["id"])
    fleet.every_worker("/key", {"X-API-Key": revoked["key"]}, 401)
    outcomes: Counter = Counter()
    pg_cluster.stop()
    try:
        stopped = time.monotonic()
        fleet.every_worker("/key", {"X-API-Key": good["key"]}, 200)  # from memory
        assert time.monotonic() - stopped < 3, "the bound passed before the check: slow machine"
        fleet.every_worker("/key", {"X-API-Key": good["key"]}, 500, timeout=20)  # past the bound
        for instance in fleet.instances:
            for key in (good, revoked):
                _, status = ask_on_a_worker(instance, {"X-Original-Method": "GET", "X-Original-URI": "/key",
                                                       "X-API-Key": key["key"]})
                outcomes[status] += 1
            import requests

            answer = requests.get(instance.url + "/auth-request", timeout=5, headers={
                "X-Original-Method": "GET", "X-Original-URI": "/key", "X-API-Key": good["key"]})
            assert answer.headers["X-Auth-Reason"] == "upstream_unavailable"
            ready = requests.get(instance.url + "/readyz", timeout=5)
            assert ready.status_code == 503 and "not confirmed current" in ready.json()["store"]
        assert set(outcomes) == {500}  # the revoked key too: never an allow
    finally:
        pg_cluster.start()
    fleet.every_worker("/key", {"X-API-Key": good["key"]}, 200, timeout=30)
    fleet.every_worker("/key", {"X-API-Key": revoked["key"]}, 401)
    for instance in fleet.instances:
        assert "not confirmed current" in instance.output() and "again" in instance.output()


def test_replicas_share_the_signing_key_and_the_last_good_policy(pg_url, policy_dir, tmp_path, servers,
                                                                  fleet_setup):
    """Every instance publishes the same JWKS and signs X-Auth-Token with the one current
    key; an instance started while its policy files are broken serves the snapshot
    another instance took of the good ones (from the store: the files never were good
    on its watch)."""
    import jwt
    import requests

    key = cli(pg_url, "keys", "create", "--principal", "partner-a")
    fleet = Fleet(servers, pg_url, policy_dir, tmp_path, count=2, AUTHZ_IDENTITY_TOKEN="all")
    keysets = [requests.get(f"{i.url}/.well-known/jwks.json", timeout=5).json() for i in fleet.instances]
    assert keysets[0]["keys"] and keysets[0] == keysets[1]
    published = {k["kid"]: jwt.PyJWK(k) for k in keysets[0]["keys"]}
    for instance in fleet.instances:
        answer = requests.get(f"{instance.url}/auth-request", timeout=5, headers={
            "X-Original-Method": "GET", "X-Original-URI": "/key", "X-API-Key": key["key"]})
        assert answer.status_code == 200
        token = answer.headers["X-Auth-Token"]
        kid = jwt.get_unverified_header(token)["kid"]
        claims = jwt.decode(token, published[kid], algorithms=[published[kid].algorithm_name],
                            options={"verify_aud": False})
        assert claims["sub"] == "partner-a"

    # Another host's copy of the files (the same path: snapshots are kept per directory)
    # arrives broken: the instance starting there serves the snapshot, not the files.
    (policy_dir / "policy.json").write_text("{ not json")
    late = Fleet(servers, pg_url, policy_dir, tmp_path, count=1)
    late.every_worker("/key", {"X-API-Key": key["key"]}, 200)
    late.every_worker("/staff", {}, 401)  # the snapshot's routes, with their authenticators
    fleet.close()
    late.close()
