"""``authz keys``: API keys."""

from __future__ import annotations

import time
from pathlib import Path

import click

from authz.cli.base import admin, ago, command, emit, main, parse_duration, when
from authz.config import default_from_env


@main.group()
def keys() -> None:
    """API keys: create, list, rotate, revoke."""


@command(keys, "create")
@click.option("--principal", required=True, help="Who the key acts for (created as a client if new).")
@click.option("--scope", "scopes", multiple=True, help="Scope granted (repeatable).")
@click.option("--env", type=click.Choice(["live", "test"]), default="live", show_default=True)
@click.option("--allow-ip", "allow_ips", multiple=True, help="CIDR the key may be used from (repeatable).")
@click.option("--expires-in", help="Lifetime, e.g. 90d.")
@click.option("--publishable", is_flag=True,
              help="A pk_ key for browser and mobile code: not secret, read-only, used only from --origin.")
@click.option("--origin", "origins", multiple=True,
              help="Origin a publishable key may be used from: https://app.example.com or "
                   "https://*.example.com (repeatable).")
@click.option("--policy-dir", default=default_from_env("AUTHZ_POLICY_DIR"), type=click.Path(path_type=Path),
              help="The policy that says which scopes write (checked for --publishable).")
def keys_create(principal, scopes, env, allow_ips, expires_in, publishable, origins, policy_dir) -> None:
    """Create a key and print it once."""
    expires_at = time.time() + parse_duration(expires_in, "'--expires-in'") if expires_in else None
    keys = admin().keys
    writing = _writing_scopes(policy_dir) if publishable and scopes and origins else None
    record, secret = keys.create(principal, scopes, env, allow_ips, expires_at, publishable=publishable,
                                 origins=origins, writing_scopes=writing)
    if publishable:
        kind, keep = (f"publishable; origins: {' '.join(record.origins)}",
                      "This key is not secret (it goes into your web or mobile app), but it is not kept: copy it now.")
    else:
        kind, keep = env, "Store this key now: it is not kept and will not be shown again."
    emit(click.get_current_context(), {**record.to_json(), "key": secret},
         f"Created {record.id} for {principal} ({kind}; scopes: {' '.join(scopes) or '-'}; "
         f"expires: {when(expires_at)})\n{secret}\n{keep}")


def _writing_scopes(policy_dir: Path) -> dict[str, str]:
    """The policy's writing scopes (``authz.policy.writing``); a policy that cannot be
    read refuses the key (one line), since no scope could be shown to be read-only."""
    from authz.authenticators import Context
    from authz.policy import PolicyError, load_policy
    from authz.policy.writing import writing_scopes
    from authz.store import open_store

    try:
        policy = load_policy(policy_dir, Context(store=open_store(":memory:")))
    except PolicyError as exc:
        more = f" (and {len(exc.problems) - 1} more)" if len(exc.problems) > 1 else ""
        raise click.ClickException(f"cannot tell which scopes write: the policy does not load: "
                                   f"{exc.problems[0]}{more}; give --policy-dir") from None
    return writing_scopes(policy)


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
