"""``authz db``: create or migrate the credential store."""

from __future__ import annotations

import click

from authz.cli.base import admin, command, emit, main
from authz.config import Settings
from authz.engine.identity_token import keep_retired_for


@main.group()
def db() -> None:
    """The credential store."""


@command(db, "init")
def db_init() -> None:
    """Create the store, or migrate it to the current schema."""
    a = admin(ready=False)
    old, new = a.init(keep_retired_for(Settings.from_env().identity_token_ttl))
    where = a.store.location
    text = f"{where}: created at schema version {new}" if old == 0 else (
        f"{where}: migrated from schema version {old} to {new}" if old != new
        else f"{where}: already at schema version {new}")
    emit(click.get_current_context(), {"path": where, "from_version": old, "version": new}, text)
