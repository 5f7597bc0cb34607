"""``authz db``: create or migrate the credential store, copy it to another."""

from __future__ import annotations

import click

from authz.admin.copy import copy_store
from authz.cli.base import admin, command, emit, main
from authz.config import Settings
from authz.engine.identity_token import keep_retired_for
from authz.store import open_store, redact


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


@command(db, "copy")
@click.option("--from", "source", required=True, help="The store to copy (a path or URL).")
@click.option("--to", "target", required=True, help="An empty store to copy into (created if missing).")
def db_copy(source: str, target: str) -> None:
    """Copy every table from one store to another (SQLite ⇄ PostgreSQL), verified by
    counts and a checksum of the rows; refuses a target that holds anything."""
    result = copy_store(open_store(source), open_store(target))
    total = sum(result.counts.values())
    emit(click.get_current_context(), {"from": redact(source), "to": redact(target), **result.to_json()},
         f"copied {total} rows ({', '.join(f'{n} {t}' for t, n in result.counts.items())}) from {redact(source)} "
         f"to {redact(target)} in {result.seconds:.1f} s; checksum {result.checksum[:16]}… matches")
