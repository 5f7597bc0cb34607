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

from authz.app import create_app
from authz.config import SettingsError
from authz.policy import PolicyError
from authz.store import StoreError

try:
    app = create_app()
except (PolicyError, StoreError, SettingsError) as exc:
    print(f"authz: refusing to start:\n{exc}", file=sys.stderr, flush=True)
    sys.exit(3)
