"""A throwaway PostgreSQL cluster for the tests: ``initdb`` into a temporary directory,
``pg_ctl`` on a free loopback port, a fresh database per test, removed at the end.

PostgreSQL refuses to run as root, and CI runs as root: then the cluster runs as the
``postgres`` user the Debian package creates (or, without it, a system user created
here), through ``runuser``. fsync is off: the data is thrown away anyway.

Connections over TCP need a password (SCRAM), as a real deployment's do: every URL the
tests hand to authz carries one, so a password that went missing on the way (a forked
worker's pool, the listener) fails, and one that reached a log is found there.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from itertools import count
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

RUN_AS = "postgres"
FALLBACK_USER = "authz-pg-test"


def binaries() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl`` (Debian keeps them out of PATH), or None."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[4]), reverse=True)
    for directory in candidates:
        if Path(directory, "initdb").exists() and Path(directory, "pg_ctl").exists():
            return Path(directory)
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    return None


def _unprivileged_user() -> str | None:
    """Who runs the server: None (this process) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in (RUN_AS, FALLBACK_USER):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", FALLBACK_USER],
                   check=True, capture_output=True)
    return FALLBACK_USER


class Cluster:
    """One PostgreSQL server in a temporary directory; ``database()`` gives a fresh URL."""

    def __init__(self, bindir: Path, port: int) -> None:
        self.bindir = bindir
        self.port = port
        self.user = _unprivileged_user()
        self.root = Path(tempfile.mkdtemp(prefix="authz-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.log = self.root / "server.log"
        self.password = "pw-" + secrets.token_urlsafe(16)
        self._names = count(1)
        self.sockets.mkdir()
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            for path in (self.root, self.sockets):
                os.chown(path, entry.pw_uid, entry.pw_gid)

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        argv = [str(self.bindir / args[0]), *args[1:]]
        if self.user is not None:
            argv = ["runuser", "-u", self.user, "--", *argv]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, cwd=self.root)

    def init(self) -> Cluster:
        pwfile = self.root / "password"
        pwfile.write_text(self.password + "\n")
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        done = self._run("initdb", "-D", str(self.data), "-U", "authz", "--auth-local=trust",
                         "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync", "--locale=C")
        pwfile.unlink()
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr or done.stdout}")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = "
                       f"'{self.sockets}'\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                       "max_connections = 300\nshared_buffers = 32MB\n")
        return self.start()

    def start(self) -> Cluster:
        done = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {done.stderr or done.stdout}\n{self.server_log()}")
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def server_log(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://authz:{self.password}@127.0.0.1:{self.port}/{database}"

    def database(self) -> str:
        """A new empty database; its URL."""
        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def drop(self, url: str) -> None:
        """Drop the database of ``url`` (one ``database()`` made), ending the sessions still
        on it: a test's databases go with the test (each is a 7 MB copy of template0)."""
        name = urlsplit(url).path.lstrip("/")
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def wait_down(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                psycopg.connect(self.url(), connect_timeout=1).close()
            except psycopg.OperationalError:
                return
            time.sleep(0.05)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
