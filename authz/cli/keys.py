"""``authz keys``: API keys."""

from __future__ import annotations

import time

import click

from authz.cli.base import admin, ago, command, emit, main, parse_duration, when


@main.group()
def keys() -> None:
    """API keys: create, list, rotate, revoke."""


@command(keys, "create")
@click.option("--principal", required=True, help="Who the key acts for (created as a client if new).")
@click.option("--scope", "scopes", multiple=True, help="Scope granted (repeatable).")
@click.option("--env", type=click.Choice(["live", "test"]), default="live", show_default=True)
@click.option("--allow-ip", "allow_ips", multiple=True, help="CIDR the key may be used from (repeatable).")
@click.option("--expires-in", help="Lifetime, e.g. 90d.")
def keys_create(principal, scopes, env, allow_ips, expires_in) -> None:
    """Create a key and print it once."""
    expires_at = time.time() + parse_duration(expires_in, "'--expires-in'") if expires_in else None
    record, secret = admin().keys.create(principal, scopes, env, allow_ips, expires_at)
    emit(click.get_current_context(), {**record.to_json(), "key": secret},
         f"Created {record.id} for {principal} ({env}; scopes: {' '.join(scopes) or '-'}; "
         f"expires: {when(expires_at)})\n{secret}\n"
         "Store this key now: it is not kept and will not be shown again.")


@command(keys, "list")
@click.option("--principal", help="Only this principal's keys.")
def keys_list(principal) -> None:
    """Keys with their status, rotation and last use (never the secret)."""
    records = admin().keys.list(principal)
    rows = [("ID", "PRINCIPAL", "KEY", "ENV", "STATUS", "SCOPES", "CREATED", "EXPIRES",
             "LAST USED", "ROTATION")]
    for r in records:
        rotation = (f"-> {r.replaced_by}" if r.replaced_by else f"<- {r.rotated_from}" if r.rotated_from else "-")
        rows.append((r.id, r.principal, r.display, r.env, r.current_status, " ".join(r.scopes) or "-",
                     when(r.created_at), when(r.expires_at), ago(r.last_used_at), rotation))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    text = "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)
    emit(click.get_current_context(), [r.to_json() for r in records], text if records else "no API keys")


@command(keys, "revoke")
@click.argument("key_id")
def keys_revoke(key_id) -> None:
    """Revoke a key: refused from the next request on."""
    record = admin().keys.revoke(key_id)
    emit(click.get_current_context(), record.to_json(), f"Revoked {key_id} ({record.principal})")


@command(keys, "rotate")
@click.argument("key_id")
@click.option("--grace", default="7d", show_default=True, help="How long the old key keeps working.")
def keys_rotate(key_id, grace) -> None:
    """Issue a successor; the old key stays valid for the grace period."""
    old, new, secret = admin().keys.rotate(key_id, parse_duration(grace, "'--grace'"))
    emit(click.get_current_context(), {"old": old.to_json(), "new": {**new.to_json(), "key": secret}},
         f"Created {new.id} for {new.principal} to replace {key_id}\n{secret}\n"
         f"Store this key now: it is not kept and will not be shown again.\n"
         f"{key_id} keeps working until {when(old.expires_at)}; `authz keys list` shows "
         "when it was last used.")
