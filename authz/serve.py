"""``authz serve``: the one way to run the HTTP front doors.

granian by default: keep-alive HTTP/1.1 (a proxy keeps its connections to authz
instead of opening one per subrequest), a worker per core, a fixed pool of blocking
threads per worker for the WSGI app, a header-read deadline so that idle or trickling
connections cannot hold workers, and bounded request heads. ``--server gunicorn``
runs gunicorn with ``deploy/gunicorn.conf.py``'s settings instead (gthread workers, so
connections are kept there too).

Before any worker starts, the store and the policy are loaded once here: a broken
start is one message and a non-zero exit, not one per worker. Prometheus multi-process
mode is set up here too (a fresh directory), so ``/metrics`` adds up every worker.

This module imports no server and no metrics at import time: ``authz.wsgi`` calls
``prepare_worker_environment`` before ``prometheus_client`` is first imported.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from authz.errors import AuthzError

SERVERS = ("granian", "gunicorn")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # os.environ, not Settings: settled before prometheus_client loads
# Variables a WSGI server defines per request. granian starts every request's environ
# from a copy of os.environ, so a process variable such as HTTP_X_SSL_CLIENT_CERT would
# read as a request header: none may reach a worker.
_CGI_NAMES = frozenset({"RAW_URI", "REQUEST_URI", "PATH_INFO", "QUERY_STRING", "SCRIPT_NAME", "REQUEST_METHOD",
                        "CONTENT_TYPE", "CONTENT_LENGTH", "REMOTE_ADDR", "REMOTE_PORT", "REMOTE_USER",
                        "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL"})
# The longest request head authz reads (request line and headers): above what the shipped
# doors forward (nginx 4 x 8k, Caddy max_header_size 8KB + Go's 4 KiB slack).
MAX_HEAD_BYTES = 64 * 1024
HEADER_READ_TIMEOUT_MS = 5000


class ServeError(AuthzError, RuntimeError):
    """authz cannot be served as asked; the message says why."""


def prepare_worker_environment(environ: dict[str, str] | None = None) -> list[str]:
    """Remove CGI-like variables from the process environment (see ``_CGI_NAMES``).

    ``HTTP_PROXY``-style settings keep working under their lower-case names, which
    Python's HTTP clients read as well. Returns the names removed.
    """
    environ = os.environ if environ is None else environ
    removed = []
    for name in list(environ):
        if name.startswith("HTTP_") or name in _CGI_NAMES:
            value = environ.pop(name)
            if name.startswith("HTTP") and name.lower() not in environ:
                environ[name.lower()] = value
            removed.append(name)
    return removed


def shared_metrics_dir(environ: dict[str, str] | None = None) -> Path:
    """Make sure every worker of this server writes Prometheus samples to one directory.

    A server started another way than ``authz serve`` (plain ``gunicorn -w 3
    wsgi:app``) did not set ``PROMETHEUS_MULTIPROC_DIR``: its workers share a process
    group with their master, so a directory named after that group (and its leader's
    start time, against pid reuse) is common to them and to nobody else.
    """
    environ = os.environ if environ is None else environ
    if environ.get(MULTIPROC_ENV):
        path = Path(environ[MULTIPROC_ENV])
        if not path.is_dir():
            raise ServeError(f"{MULTIPROC_ENV}={path} is not a directory")
        return path
    if "prometheus_client" in sys.modules:
        raise ServeError(f"metrics were set up before authz could share them between workers: "
                         f"set {MULTIPROC_ENV} to an empty directory, or start with `authz serve`")
    path = Path(tempfile.gettempdir()) / f"authz-metrics-{os.getuid()}-{_group_key(os.getpgrp())}"
    _remove_stale_group_dirs(path.parent)
    path.mkdir(mode=0o700, exist_ok=True)
    environ[MULTIPROC_ENV] = str(path)
    return path


def _group_key(group: int) -> str:
    """A process group id and its leader's start time (pids are reused)."""
    try:
        started = Path(f"/proc/{group}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        started = "0"
    return f"{group}-{started}"


def _remove_stale_group_dirs(parent: Path) -> None:
    """Directories of process groups that no longer exist (a server that was stopped)."""
    prefix = f"authz-metrics-{os.getuid()}-"
    for candidate in parent.glob(prefix + "*"):
        group, _, started = candidate.name[len(prefix):].partition("-")
        if group.isdigit() and started.isdigit() and _group_key(int(group)) != f"{group}-{started}":
            shutil.rmtree(candidate, ignore_errors=True)


def fresh_metrics_dir() -> Path:
    """An empty directory for this server's metrics, set in the environment workers inherit."""
    path = Path(tempfile.mkdtemp(prefix="authz-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    return path


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 0  # 0: one per core
    # Blocking threads per worker (granian) / threads (gunicorn gthread): above the
    # default AUTHZ_KDF_CONCURRENCY (2), so a password flood never takes every thread.
    threads: int = 4
    server: str = "granian"

    @classmethod
    def parse_bind(cls, bind: str, **kwargs) -> ServeOptions:
        host, sep, port = bind.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ServeError(f"--bind {bind!r}: give HOST:PORT")
        return cls(host=host.strip("[]") or "127.0.0.1", port=int(port), **kwargs)

    @property
    def worker_count(self) -> int:
        return self.workers or os.cpu_count() or 1


def check_startable() -> None:
    """Load the store and policy once, as a worker will: refuse before any worker starts."""
    from authz.service import build_state

    build_state()


def exec_fresh(options: ServeOptions) -> None:
    """Replace this process with ``python -m authz.serve``: a process that has imported
    nothing of authz's metrics yet, so that prometheus_client starts in multi-process
    mode and the workers the server forks inherit that (a CLI process has imported it
    already, in single-process mode)."""
    payload = json.dumps(dataclasses.asdict(options))
    os.execv(sys.executable, [sys.executable, "-m", "authz.serve", payload])  # noqa: S606 — fixed program


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        options = ServeOptions(**json.loads(argv[0]))
    except (IndexError, TypeError, ValueError):
        print("usage: python -m authz.serve '<options as JSON>' (use `authz serve`)", file=sys.stderr)
        return 2
    # Before the imports below: they import prometheus_client.
    prepare_worker_environment()
    owned = None if os.environ.get(MULTIPROC_ENV) else fresh_metrics_dir()
    try:
        run(options, on_ready=lambda: print(
            f"authz serve: {options.server} on {options.host}:{options.port}, {options.worker_count} worker(s)",
            file=sys.stderr, flush=True))
    except AuthzError as exc:  # ServeError, a broken store, policy or setting
        print(f"authz serve: refusing to start:\n{exc}", file=sys.stderr, flush=True)
        return 3
    finally:
        if owned is not None:
            shutil.rmtree(owned, ignore_errors=True)
    return 0


def run(options: ServeOptions, on_ready=None) -> None:
    """Check that authz can start, then serve until SIGTERM/SIGINT.

    The process environment must already be prepared (``prepare_worker_environment``,
    ``PROMETHEUS_MULTIPROC_DIR``) before prometheus_client is imported: ``main`` does
    it. Raises ``AuthzError`` (``ServeError``, ``PolicyError``, ``StoreError``,
    ``SettingsError``) before any worker starts; ``on_ready()`` is called once the check passed.
    """
    if options.server not in SERVERS:
        raise ServeError(f"--server {options.server!r}: one of {', '.join(SERVERS)}")
    if not os.environ.get(MULTIPROC_ENV):
        raise ServeError(f"{MULTIPROC_ENV} is not set: workers would each report their own metrics")
    check_startable()
    if on_ready is not None:
        on_ready()
    if options.server == "granian":
        _granian(options)
    else:
        _gunicorn(options)


def _granian(options: ServeOptions) -> None:
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings

    Granian(
        "authz.wsgi:app",
        address=options.host,
        port=options.port,
        interface=Interfaces.WSGI,
        workers=options.worker_count,
        blocking_threads=options.threads,
        http=HTTPModes.http1,
        websockets=False,
        backlog=2048,
        http1_settings=HTTP1Settings(header_read_timeout=HEADER_READ_TIMEOUT_MS, keep_alive=True,
                                     max_buffer_size=MAX_HEAD_BYTES),
        respawn_failed_workers=True,
        log_access=False,  # the decision log records every decision, without query strings
    ).serve()


def _gunicorn(options: ServeOptions) -> None:
    config = Path(__file__).resolve().parent.parent / "deploy" / "gunicorn.conf.py"
    argv = [sys.executable, "-m", "gunicorn", "--bind", f"{options.host}:{options.port}",
            "--workers", str(options.worker_count), "--worker-class", "gthread", "--threads", str(options.threads),
            "--keep-alive", "30", "--timeout", "10", "--graceful-timeout", "10",
            "--limit-request-line", "8190", "--limit-request-fields", "4000", "--limit-request-field_size", "12288",
            "--access-logfile", "-", "--access-logformat", '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(M)sms',
            "authz.wsgi:app"]
    if config.exists():  # from a source checkout: the same settings file operators use
        argv[3:3] = ["--config", str(config)]
    os.execv(sys.executable, argv)  # noqa: S606 — replaces this process with gunicorn, fixed arguments


if __name__ == "__main__":
    sys.exit(main())
