"""``authz signing-keys``: authz's own X-Auth-Token keys."""

from __future__ import annotations

import click

from authz.cli.base import admin, command, emit, main, when
from authz.config import Settings
from authz.engine.identity_token import keep_retired_for


@main.group("signing-keys")
def signing_keys() -> None:
    """authz's own keys for the X-Auth-Token identity JWT."""


@command(signing_keys, "rotate")
def signing_keys_rotate() -> None:
    """New signing key; the old one stays published until its tokens have expired."""
    record = admin().signing_keys.rotate(keep_retired_for(Settings.from_env().identity_token_ttl))
    emit(click.get_current_context(), record.to_json(),
         f"Signing with {record.kid} from now on (workers pick it up within seconds)"
         + (f"; {', '.join(record.retired)} published until {when(record.old_published_until)}"
            if record.retired else ""))


@command(signing_keys, "list")
def signing_keys_list() -> None:
    """Signing keys, newest first."""
    records = admin().signing_keys.list()
    emit(click.get_current_context(), [r.to_json() for r in records], "\n".join(
        f"{r.kid}  {r.algorithm}  {r.status}  created {when(r.created_at)}"
        + (f"  published until {when(r.publish_until)}" if r.publish_until else "") for r in records)
        or "no signing keys")
