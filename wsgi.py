"""WSGI entry point: ``gunicorn wsgi:app``.

Configuration comes from the environment (AUTHZ_DB, AUTHZ_POLICY_DIR,
AUTHZ_TRUSTED_PROXIES, AUTHZ_PROXY_SECRET). On a broken store or policy the
problems are printed one per line and the process exits, so gunicorn refuses to
start instead of serving a partial policy.
"""

import sys

from authz.app import create_app
from authz.config import SettingsError
from authz.policy import PolicyError
from authz.store import StoreError

try:
    app = create_app()
except (PolicyError, StoreError, SettingsError) as exc:
    print(f"authz: refusing to start:\n{exc}", file=sys.stderr, flush=True)
    sys.exit(3)
