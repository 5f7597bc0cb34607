"""WSGI entry point: ``gunicorn wsgi:app``.

Configuration comes from the environment (AUTHZ_DB, AUTHZ_POLICY_DIR,
AUTHZ_TRUSTED_PROXIES, AUTHZ_PROXY_SECRET). On a broken store or policy the
problems are printed one per line and the process exits, so gunicorn refuses to
start instead of serving a partial policy.
"""

import logging
import sys

from authz.app import create_app
from authz.config import SettingsError
from authz.policy import PolicyError
from authz.store import StoreError


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
except (PolicyError, StoreError, SettingsError) as exc:
    print(f"authz: refusing to start:\n{exc}", file=sys.stderr, flush=True)
    sys.exit(3)
