"""Shared fixtures: real stores, policy directories, the Flask app, and real servers
(gunicorn, granian through ``authz serve``, nginx) on loopback ports.

The store is an SQLite file unless ``AUTHZ_TEST_STORE=postgresql``: then every store a
test opens through ``store`` / ``new_store`` is a fresh database on the session's
PostgreSQL cluster, and every server and CLI command is pointed at it (``store.url``).
`make test` runs the end-to-end files that touch the store once more that way (the
``both_stores`` marker); a test about SQLite itself says so with ``sqlite_only``.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import pytest
import requests

from authz.admin import Admin
from authz.app import create_app
from authz.authenticators import Context
from authz.config import Settings
from authz.engine import DecisionEngine
from authz.policy import load_policy
from authz.store import Store, open_store

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STORE_BACKENDS = ("sqlite", "postgresql")
STORE_BACKEND = os.environ.get("AUTHZ_TEST_STORE", "sqlite")
ON_POSTGRESQL = STORE_BACKEND == "postgresql"
T = TypeVar("T")

# Argon2id at full strength costs ~40 ms a hash; tests hash few passwords, so keep it.


# Under pytest-xdist (`make test` runs two workers) each worker hands out ports from its
# own block below the kernel's ephemeral range: a port one worker has picked but whose
# server has not bound it yet can never be the other worker's pick, nor a client socket's.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
_PORT_BLOCK = 4000
_next_ports = (itertools.cycle(range(20000 + int(_WORKER[2:]) * _PORT_BLOCK,
                                     20000 + (int(_WORKER[2:]) + 1) * _PORT_BLOCK))
               if _WORKER.startswith("gw") and _WORKER[2:].isdigit() and int(_WORKER[2:]) < 3 else None)


def free_port() -> int:
    """A loopback port nothing listens on now."""
    if _next_ports is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    for _ in range(_PORT_BLOCK):
        port = next(_next_ports)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in xdist worker {_WORKER}'s block")


def write_policy(directory: Path, document: dict, name: str = "policy.json") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(json.dumps(document, indent=2))
    return path


def pytest_configure(config) -> None:
    if STORE_BACKEND not in STORE_BACKENDS:
        raise pytest.UsageError(f"AUTHZ_TEST_STORE={STORE_BACKEND!r}: expected one of {', '.join(STORE_BACKENDS)}")


def pytest_report_header(config) -> str:
    return f"store: {STORE_BACKEND} (AUTHZ_TEST_STORE)"


def pytest_collection_modifyitems(config, items) -> None:
    """A test about SQLite itself (its file, WAL, locks) has nothing to say on PostgreSQL:
    skipped there, with its reason, never passing silently."""
    if not ON_POSTGRESQL:
        return
    for item in items:
        marker = item.get_closest_marker("sqlite_only")
        if marker is not None:
            reason = marker.args[0] if marker.args else "about the SQLite file"
            item.add_marker(pytest.mark.skip(reason=f"SQLite only: {reason}"))


@pytest.fixture(scope="session")
def pg_cluster():
    """One throwaway PostgreSQL server for the session (see tests/pg.py); skipped, with
    the reason, only when the PostgreSQL binaries are not installed."""
    from tests import pg

    bindir = pg.binaries()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (no initdb/pg_ctl): `make test` installs it")
    cluster = pg.Cluster(bindir, free_port()).init()
    yield cluster
    cluster.destroy()


@pytest.fixture
def pg_url(pg_cluster) -> str:
    """The URL of a fresh, empty database on the session's PostgreSQL server, dropped
    after the test."""
    url = pg_cluster.database()
    yield url
    pg_cluster.drop(url)


_STORE_DIRS: dict[str, Path] = {}  # a PostgreSQL store's URL -> the test directory it belongs to


class StoreFactory:
    """Opens migrated stores for tests (the ``new_store`` fixture): the SQLite file
    ``directory/name``, or with ``AUTHZ_TEST_STORE=postgresql`` a fresh database on the
    session's cluster. Whoever opens one discards it when its scope ends."""

    def __init__(self, cluster) -> None:
        self.cluster = cluster
        self.opened: weakref.WeakSet = weakref.WeakSet()

    def __call__(self, directory: Path, name: str = "authz.db", **options) -> Store:
        url = self.cluster.database() if self.cluster is not None else directory / name
        s = open_store(url, **options)
        self.opened.add(s)
        if self.cluster is not None:
            _STORE_DIRS[s.url] = directory
        s.migrate()
        return s

    def discard(self, store: Store) -> None:
        """Close ``store``; on PostgreSQL drop its database too (ending what a server
        still holds on it)."""
        store.close()
        if self.cluster is not None:
            self.cluster.drop(store.url)


@pytest.fixture(scope="session")
def new_store(request) -> StoreFactory:
    """The session's ``StoreFactory``; what is still open at its end is closed then,
    before the cluster goes."""
    factory = StoreFactory(request.getfixturevalue("pg_cluster") if ON_POSTGRESQL else None)
    yield factory
    for s in list(factory.opened):
        s.close()


def store_dir(store: Store) -> Path:
    """The test directory a store belongs to (its file's, for SQLite): where the servers
    started on it keep their logs."""
    path = getattr(store, "path", None)
    return Path(path).parent if path is not None else _STORE_DIRS[store.url]


@pytest.fixture
def store(new_store, tmp_path) -> Store:
    s = new_store(tmp_path, last_used_interval=0.05)
    yield s
    new_store.discard(s)


PROPAGATION_TIMEOUT = 10.0  # seconds; generous: issue 14 promises 1 s, bench/replicas.py measures it


def propagated(ask: Callable[[], T], arrived: Callable[[T], bool]) -> T:
    """``ask()`` for the first answer after a store write, which the caller then asserts on.

    On SQLite every worker reads the file: the very next answer must show the write, so
    this asks once. On PostgreSQL each serving process learns of a write from the change
    log a moment later: this asks again until ``arrived(answer)``, for at most
    ``PROPAGATION_TIMEOUT`` seconds, and returns the last answer either way."""
    answer = ask()
    deadline = time.monotonic() + PROPAGATION_TIMEOUT
    while ON_POSTGRESQL and not arrived(answer) and time.monotonic() < deadline:
        time.sleep(0.02)
        answer = ask()
    return answer


def propagated_to_every_worker(server: Server, headers: dict[str, str], status: int,
                               path: str = "/auth-request") -> None:
    """After a store write, on PostgreSQL: ask each worker of ``server`` until it answers
    ``status`` (see ``propagated``), so that what the test asserts next holds for all of
    them. On SQLite nothing: the next request to any worker must already show it."""
    if not ON_POSTGRESQL:
        return
    pending, deadline = set(server.workers()), time.monotonic() + PROPAGATION_TIMEOUT
    while pending:
        assert time.monotonic() < deadline, f"workers {pending} still do not answer {status}"
        pid, answered = ask_on_a_worker(server, {"X-Original-Method": "GET", **headers}, path)
        if answered == status:
            pending.discard(pid)


@pytest.fixture
def policy_dir(tmp_path) -> Path:
    d = tmp_path / "policies"
    d.mkdir()
    return d


def logged_decisions(store: Store, at_least: int, containing: str, decision: str | None = None) -> str:
    """The whole lines of the decision log of the servers started on ``store``, once it
    holds ``at_least`` decisions (those of ``decision``, "allow" or "deny", if given) and
    ``containing`` somewhere: each worker writes its own batches, in either order. Fails
    after 10 s."""
    log = store_dir(store) / "decisions.log"
    counted = '"decision"' if decision is None else f'"decision":"{decision}"'
    deadline = time.monotonic() + 10
    while (text := (log.read_text() if log.exists() else "").rpartition("\n")[0]).count(counted) < at_least \
            or containing not in text:
        assert time.monotonic() < deadline, "the decisions were not logged"
        time.sleep(0.1)
    return text


def explain_json(store: Store, policy_dir: Path, method: str, url: str, headers: Iterable[str] = (),
                 *options: str) -> dict:
    """``authz policy explain --json`` run in this process (a dry run) with ``-H`` for each
    of ``headers`` ("Name: value"); it must exit 0."""
    from click.testing import CliRunner

    from authz.cli import main

    args = ["--db", str(store.url), "policy", "explain", method, url, "--policy-dir", str(policy_dir), "--json",
            *options]
    for header in headers:
        args += ["-H", header]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def engine_for(store: Store, directory: Path) -> DecisionEngine:
    return DecisionEngine(load_policy(directory, Context(store=store)))


def add_user(store: Store, name: str, password: str, scopes=(), roles=()) -> None:
    Admin(store).users.add(name, password, scopes, roles)


@pytest.fixture
def make_client(store, policy_dir):
    """Build a Flask test client for a policy document (and optional settings)."""

    def make(document: dict | None = None, **settings):
        if document is not None:
            write_policy(policy_dir, document)
        settings.setdefault("decision_log", "off")
        app = create_app(Settings(db_path=store.url, policy_dir=policy_dir, **settings))
        apps.append(app)
        return app.test_client()

    apps: list = []
    yield make
    for app in apps:
        app.extensions["authz"].store.close()


class Server:
    """A process serving HTTP on a loopback port, stopped at teardown."""

    def __init__(self, args, port: int, env=None, cwd=ROOT, log: Path | None = None) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait(self, path: str = "/healthz", timeout: float = 20.0) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.output()}")
            try:
                requests.get(self.url + path, timeout=2)
                return self
            except (requests.ConnectionError, requests.Timeout):  # not listening, or still booting
                time.sleep(0.05)
        raise RuntimeError(f"server on {self.url} did not answer in {timeout}s: {self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log and self.log.exists() else ""

    def workers(self) -> set[int]:
        """The pids of the server's worker processes: the master's children, from /proc."""
        return children(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def children(pid: int) -> set[int]:
    found: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return found
    for task in tasks:
        try:
            found |= {int(p) for p in Path(f"/proc/{pid}/task/{task}/children").read_text().split()}
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
    return found


def _socket_inode(server_port: int, client_port: int) -> int | None:
    """The inode of the server side of a loopback TCP connection, from /proc/net/tcp."""
    local, remote = f"0100007F:{server_port:04X}", f"0100007F:{client_port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[2] == remote and fields[9] != "0":
            return int(fields[9])
    return None


def worker_holding(server: Server, client_port: int, timeout: float = 10.0) -> int:
    """The pid of the worker process holding the server side of our loopback connection
    from ``client_port`` (found in /proc once a worker has accepted it)."""
    deadline = time.monotonic() + timeout
    while True:
        assert time.monotonic() < deadline, "no worker accepted the connection"
        inode = _socket_inode(server.port, client_port)
        for pid in server.workers() if inode else ():
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
            except FileNotFoundError:
                continue
            for fd in fds:
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                        return pid
                except OSError:
                    continue
        time.sleep(0.01)


def ask_on_a_worker(server: Server, headers: dict[str, str], path: str = "/auth-request",
                    timeout: float = 10.0) -> tuple[int, int]:
    """One GET on a connection of its own; returns (pid of the worker that accepted the
    connection, status). The worker is identified from /proc while the request head is
    still incomplete (the connection is then held by the worker that will answer), on
    any server, without anything in the product naming it."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())
        worker = worker_holding(server, sock.getsockname()[1], timeout)
        head = "".join(f"{name}: {value}\r\n" for name, value in {**headers, "Connection": "close"}.items())
        sock.sendall(head.encode() + b"\r\n")
        answer = b""
        while b"\r\n" not in answer and (chunk := sock.recv(4096)):
            answer += chunk
    return worker, int(answer.split(b" ", 2)[1])


def allowed_once_then_refused_by_another_worker(server: Server, headers: dict[str, str]) -> None:
    """``headers`` (a one-time proof or signature) are allowed on one worker, then the same
    request is refused (401), again and again, until a worker other than the first has
    refused it: the one-time value is spent for every worker, not just the first."""
    first, status = ask_on_a_worker(server, headers)
    assert status == 200
    others = set()
    for _ in range(40):
        worker, status = ask_on_a_worker(server, headers)
        assert status == 401
        others.add(worker)
        if others - {first}:
            break
    assert others - {first}, "every replay reached the first worker"


@pytest.fixture
def servers():
    started: list[Server] = []

    def start(*args, **kwargs) -> Server:
        server = Server(*args, **kwargs)
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.stop()


def gunicorn_env(store: Store, policy_dir: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHZ_")}
    env.update(AUTHZ_DB=store.url, AUTHZ_POLICY_DIR=str(policy_dir), AUTHZ_LAST_USED_INTERVAL="0.2",
               AUTHZ_DECISION_LOG=str(store_dir(store) / "decisions.log"))
    env.update(extra)
    return env


@pytest.fixture
def gunicorn(servers, store, policy_dir, tmp_path):
    """Start authz under gunicorn with N workers; access log records each worker's pid."""

    def start(workers: int = 2, deploy_config: bool = False, error_log: Path | None = None, **env) -> Server:
        """``deploy_config``: run with deploy/gunicorn.conf.py (preload, timeouts) as shipped;
        ``error_log``: gunicorn's ``--error-logfile``."""
        port = free_port()
        access = tmp_path / f"access-{port}.log"
        config = ["-c", str(ROOT / "deploy" / "gunicorn.conf.py")] if deploy_config else []
        config += ["--error-logfile", str(error_log)] if error_log else []
        server = servers(
            [str(BIN / "gunicorn"), *config, "--workers", str(workers), "--bind", f"127.0.0.1:{port}",
             "--access-logfile", str(access), "--access-logformat", "%(p)s %(s)s %(U)s",
             "wsgi:app"],
            port, env=gunicorn_env(store, policy_dir, **env), log=tmp_path / f"gunicorn-{port}.log",
        )
        server.access_log = access
        return server.wait()

    return start


@pytest.fixture(params=["gunicorn", "granian"])
def server(request, servers, gunicorn, store, policy_dir, tmp_path):
    """Start authz with N workers on each server it is run on: gunicorn with the shipped
    deploy/gunicorn.conf.py (sync workers, ``preload_app``), and granian, the default, as
    ``authz serve`` starts it. ``start.kind`` names the server."""
    kind = request.param

    def start(workers: int = 3, **env) -> Server:
        if kind == "gunicorn":
            started = gunicorn(workers=workers, deploy_config=True, **env)
        else:
            port = free_port()
            environment = gunicorn_env(store, policy_dir, **env)
            environment.pop("PROMETHEUS_MULTIPROC_DIR", None)  # authz serve makes its own
            started = servers([str(BIN / "authz"), "serve", "--bind", f"127.0.0.1:{port}", "--workers", str(workers)],
                              port, env=environment, log=tmp_path / f"serve-{port}.log").wait()
        started.kind = kind
        return started

    start.kind = kind
    return start


def caddy_binary() -> str:
    found = shutil.which("caddy")
    if not found:
        pytest.fail("caddy is not installed: `make test` installs it (apt-get install caddy)")
    return found


def start_caddy(servers, caddyfile: str, port: int, tmp_path: Path) -> Server:
    """Debian's Caddy 2.6 with its state kept inside the test's directory."""
    home = tmp_path / "caddy-home"
    home.mkdir(exist_ok=True)
    (tmp_path / "Caddyfile").write_text(caddyfile)
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / "config"),
           "XDG_DATA_HOME": str(home / "data")}
    return servers([caddy_binary(), "run", "--config", str(tmp_path / "Caddyfile"), "--adapter", "caddyfile"],
                   port, env=env, log=tmp_path / "caddy.log")


def loopback_listens(text: str, listen: str, port: int) -> str:
    """An nginx file's ``listen <listen>`` directives (any suffix kept, e.g.
    ``default_server``) re-pointed to ``127.0.0.1:<port>``, IPv6 listens dropped."""
    text = re.sub(r"^\s*listen\s+\[::\]:\d+[^;]*;\s*$", "", text, flags=re.M)
    return re.sub(rf"\blisten\s+{re.escape(listen)}\b", f"listen 127.0.0.1:{port}", text)


def nginx_conf(directory: Path, sites: str) -> Path:
    """A whole nginx.conf around ``sites`` with everything nginx writes inside
    ``directory``, checked with ``nginx -t``; every ``listen`` must be on loopback (a
    ``listen 80`` left over binds every interface, and fails when another test holds it)."""
    for address in re.findall(r"^\s*listen\s+([^\s;]+)", sites, re.M):
        assert address.startswith(("127.0.0.1:", "[::1]:", "unix:")), f"nginx would listen on {address}"
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "nginx.conf"
    conf.write_text(f"""
{"user root;" if os.geteuid() == 0 else ""}
daemon off;
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/nginx-error.log info;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {directory}/body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
{sites}
}}
""")
    check = subprocess.run([nginx_binary(), "-t", "-c", str(conf), "-e", str(directory / "t.log")],
                           capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
    return conf


def start_nginx(servers, tmp_path: Path, sites: str, port: int) -> Server:
    """Real nginx in the foreground (see ``nginx_conf``), stopped at teardown."""
    conf = nginx_conf(tmp_path, sites)
    return servers([nginx_binary(), "-c", str(conf), "-e", str(tmp_path / "nginx-error.log")], port,
                   log=tmp_path / "nginx-out.log")


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if not found:
        pytest.fail("nginx is not installed: `make test` installs it (apt-get install nginx-light)")
    return found
