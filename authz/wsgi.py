"""The WSGI application every server imports: ``authz.wsgi:app``.

``authz serve`` points granian (or gunicorn) here; ``gunicorn wsgi:app`` from a source
checkout reaches it through the top-level ``wsgi.py``. Before anything imports
``prometheus_client``, the process environment is cleaned of request-like variables
(granian copies it into every request's environ) and every worker is pointed at one
shared metrics directory, however the server was started.

Configuration comes from the environment (AUTHZ_DB, AUTHZ_POLICY_DIR, …). On a broken
store, policy or setting the problems are printed one per line and the process exits,
so the server refuses to start instead of serving a partial policy.
"""

import sys

from authz.serve import ServeError, prepare_worker_environment, shared_metrics_dir

try:
    prepare_worker_environment()
    shared_metrics_dir()
except ServeError as exc:
    print(f"authz: refusing to start: {exc}", file=sys.stderr, flush=True)
    sys.exit(3)

import logging

from authz.app import create_app
from authz.errors import AuthzError


class _ToServerErrorLog(logging.Handler):
    """authz's log lines go where the server's error log goes (``--error-logfile``,
    syslog, …), formatted and reopened by the server, not to the process's stderr."""

    def __init__(self, target: logging.Logger) -> None:
        super().__init__()
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        self.target.handle(record)


_server_log = logging.getLogger("gunicorn.error")
if _server_log.handlers:  # served by gunicorn: its logger is set up before the app is loaded
    _authz_log = logging.getLogger("authz")
    _authz_log.addHandler(_ToServerErrorLog(_server_log))
    _authz_log.setLevel(_server_log.level)
    _authz_log.propagate = False

try:
    app = create_app()
except AuthzError as exc:  # a broken store, policy or setting: every problem, no traceback
    print(f"authz: refusing to start:\n{exc}", file=sys.stderr, flush=True)
    sys.exit(3)
