"""Shared fixtures: real SQLite stores, policy directories, the Flask app, and real
servers (gunicorn, nginx) on loopback ports."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from authz import passwords
from authz.app import create_app
from authz.authenticators import Context
from authz.config import Settings
from authz.engine import DecisionEngine
from authz.policy import load_policy
from authz.store import Store

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Argon2id at full strength costs ~40 ms a hash; tests hash few passwords, so keep it.


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_policy(directory: Path, document: dict, name: str = "policy.json") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(json.dumps(document, indent=2))
    return path


@pytest.fixture
def store(tmp_path) -> Store:
    s = Store(tmp_path / "authz.db", last_used_interval=0.05)
    s.migrate()
    return s


@pytest.fixture
def policy_dir(tmp_path) -> Path:
    d = tmp_path / "policies"
    d.mkdir()
    return d


def engine_for(store: Store, directory: Path) -> DecisionEngine:
    return DecisionEngine(load_policy(directory, Context(store=store)))


def add_user(store: Store, name: str, password: str, scopes=(), roles=()) -> None:
    store.principals.add_user(name, passwords.hash_password(password), scopes, roles)


@pytest.fixture
def make_client(store, policy_dir):
    """Build a Flask test client for a policy document (and optional settings)."""

    def make(document: dict | None = None, **settings):
        if document is not None:
            write_policy(policy_dir, document)
        settings.setdefault("decision_log", "off")
        app = create_app(Settings(db_path=store.path, policy_dir=policy_dir, **settings))
        return app.test_client()

    return make


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

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


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
    env.update(AUTHZ_DB=str(store.path), AUTHZ_POLICY_DIR=str(policy_dir), AUTHZ_LAST_USED_INTERVAL="0.2",
               AUTHZ_DECISION_LOG=str(Path(store.path).parent / "decisions.log"))
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


def start_nginx(servers, tmp_path: Path, sites: str, port: int) -> Server:
    """Real nginx in the foreground with everything it writes inside ``tmp_path``;
    the configuration is checked with ``nginx -t`` first."""
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"""
{"user root;" if os.geteuid() == 0 else ""}
daemon off;
worker_processes 1;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/nginx-error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp_path}/body;
    proxy_temp_path {tmp_path}/proxy;
    fastcgi_temp_path {tmp_path}/fastcgi;
    uwsgi_temp_path {tmp_path}/uwsgi;
    scgi_temp_path {tmp_path}/scgi;
{sites}
}}
""")
    binary = nginx_binary()
    check = subprocess.run([binary, "-t", "-c", str(conf), "-e", str(tmp_path / "t.log")],
                           capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
    return servers([binary, "-c", str(conf), "-e", str(tmp_path / "nginx-error.log")], port,
                   log=tmp_path / "nginx-out.log")


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if not found:
        pytest.fail("nginx is not installed: `make test` installs it (apt-get install nginx-light)")
    return found
