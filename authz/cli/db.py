"""``authz db``: create or migrate the credential store."""

from __future__ import annotations

import click

from authz.cli.base import command, emit, main, store
from authz.config import Settings
from authz.engine.identity_token import keep_retired_for


@main.group()
def db() -> None:
    """The credential store."""


@command(db, "init")
def db_init() -> None:
    """Create the store, or migrate it to the current schema."""
    s = store(ready=False)
    old, new = s.migrate()
    s.signing_keys.ensure(keep_retired_for(Settings.from_env().identity_token_ttl))
    ctx = click.get_current_context()
    text = f"{s.path}: created at schema version {new}" if old == 0 else (
        f"{s.path}: migrated from schema version {old} to {new}" if old != new
        else f"{s.path}: already at schema version {new}")
    emit(ctx, {"path": str(s.path), "from_version": old, "version": new}, text)
