"""The ``authz`` command line: a thin skin over ``authz.store`` and ``authz.policy``.

One module per command group; ``base`` holds the group, the ``--json`` switch and the
one-line error wrapper every command shares.

Every command takes ``--json`` for scripts. Bad input fails with one line on stderr
and a non-zero exit, before anything is written.
"""

from __future__ import annotations

import os
import sys


def _command_name(argv: list[str]) -> str | None:
    args = iter(argv)
    for arg in args:
        if arg == "--db":
            next(args, None)
        elif not arg.startswith("-"):
            return arg
    return None


# The CLI never touches the servers' multi-process metrics state (a missing directory
# crashed every command; a present one collected a file per run): its metrics stay in
# memory, unless this process is a server itself (``authz grpc``). This must happen
# before anything imports prometheus_client, which reads the variable once.
if _command_name(sys.argv[1:]) not in ("grpc", "serve"):
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)

from authz.cli import (  # noqa: E402  (registers the command groups on main)
    certs,
    db,
    keys,
    policy,
    servers,
    signing_keys,
    tokens,
    users,
    webhooks,
)
from authz.cli.base import main  # noqa: E402

__all__ = ["certs", "db", "keys", "main", "policy", "servers", "signing_keys", "tokens", "users", "webhooks"]
