"""``authz keys``: API keys."""

from __future__ import annotations

import math
import time
from pathlib import Path

import click

from authz.cli.base import admin, ago, command, emit, main, parse_duration, when
from authz.config import default_from_env


@main.group()
def keys() -> None:
    """API keys: create, update, list, show, usage, anomalies, expiring, rotate, revoke."""


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
@click.option("--on-anomaly", "on_anomaly", type=click.Choice(["allow", "deny"]), default="allow", show_default=True,
              help="deny: refuse the key while it has an anomaly nobody acknowledged (authz keys anomalies --ack).")
@click.option("--signing", type=click.Choice(["hmac-sha256"]),
              help="The key signs its requests (RFC 9421) with an HMAC secret authz generates and prints once.")
@click.option("--signing-public-key", "signing_public_key",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The key signs its requests (RFC 9421) with the Ed25519 private key of this public key "
                   "(PEM; recommended: authz holds no secret).")
def keys_create(principal, scopes, env, allow_ips, expires_in, publishable, origins, policy_dir, on_anomaly,
                signing, signing_public_key) -> None:
    """Create a key and print it once (and its HMAC signing secret, with --signing)."""
    expires_at = time.time() + parse_duration(expires_in, "'--expires-in'") if expires_in else None
    material, signing_secret = _signing_material(signing, signing_public_key)
    keys = admin().keys
    writing = _writing_scopes(policy_dir) if publishable and scopes and origins else None
    record, secret = keys.create(principal, scopes, env, allow_ips, expires_at, publishable=publishable,
                                 origins=origins, writing_scopes=writing, on_anomaly=on_anomaly, signing=material)
    if publishable:
        kind, keep = (f"publishable; origins: {' '.join(record.origins)}",
                      "This key is not secret (it goes into your web or mobile app), but it is not kept: copy it now.")
    else:
        kind, keep = env, "Store this key now: it is not kept and will not be shown again."
    shown = {**record.to_json(), "key": secret}
    text = (f"Created {record.id} for {principal} ({kind}; scopes: {' '.join(scopes) or '-'}; "
            f"expires: {when(expires_at)})\n{secret}\n{keep}")
    if record.signing is not None:
        text += f"\nIt signs its requests ({record.signing}, RFC 9421) with keyid \"{record.id}\"."
    if signing_secret is not None:
        shown["signing_secret"] = signing_secret
        text += (f"\nHMAC signing secret (base64; shown once, keep it with the key):\n{signing_secret}")
    emit(click.get_current_context(), shown, text)


def _signing_material(signing: str | None, public_key: Path | None):
    """(what the key signs with, the HMAC secret to print once); refused in one line."""
    from authz.credentials import request_signing

    if signing and public_key:
        raise click.ClickException("give --signing hmac-sha256 or --signing-public-key, not both")
    if signing:
        return request_signing.new_hmac()
    if public_key is None:
        return None, None
    try:
        return request_signing.ed25519_public(public_key.read_bytes()), None
    except request_signing.SigningMaterialError as exc:
        raise click.ClickException(f"--signing-public-key {public_key}: {exc}") from None


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
@click.option("--unused-since", help="Only usable keys nobody presented for this long, e.g. 30d.")
def keys_list(principal, unused_since) -> None:
    """Keys with their status, rotation and last use (never the secret); a rotated key
    says how many requests presented it since the rotation."""
    unused_for = parse_duration(unused_since, "'--unused-since'") if unused_since is not None else None
    views = admin().usage.views(principal, unused_for)
    rows = [("ID", "PRINCIPAL", "KEY", "ENV", "STATUS", "SCOPES", "CREATED", "EXPIRES",
             "LAST USED", "ROTATION")]
    for view in views:
        r = view.key
        rows.append((r.id, r.principal, r.display, r.env, r.current_status, " ".join(r.scopes) or "-",
                     when(r.created_at), when(r.expires_at), ago(r.last_used_at), _rotation(view)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    text = "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)
    empty = f"no API key unused for {unused_since}" if unused_since is not None else "no API keys"
    emit(click.get_current_context(), [view.to_json() for view in views], text if views else empty)


def _rotation(view) -> str:
    r, since = view.key, view.rotation
    if since is not None:
        used = f"{since.requests} request(s) since" if since.still_used else "none since"
        return f"-> {r.replaced_by}, {used}"
    return f"<- {r.rotated_from}" if r.rotated_from else "-"


@command(keys, "show")
@click.argument("key_id")
def keys_show(key_id) -> None:
    """One key: its record, its latest request and, once rotated, whether anything still
    presents it (safe to revoke)."""
    view = admin().usage.view(key_id)
    r, last = view.key, view.last_request
    lines = [f"{r.id} ({r.principal}, {r.principal_kind})",
             f"  key:           {r.display} ({'publishable, ' if r.publishable else ''}{r.env})",
             f"  status:        {r.current_status}",
             f"  scopes:        {' '.join(r.scopes) or '-'}",
             f"  allowed IPs:   {' '.join(r.allow_ips) or 'any'}"]
    if r.publishable:
        lines.append(f"  origins:       {' '.join(r.origins)}")
    origin = f" (rotated from {r.rotated_from})" if r.rotated_from else ""
    lines.append(f"  on anomaly:    {r.on_anomaly}")
    lines.append(f"  signing:       {r.signing + ' (RFC 9421, keyid ' + r.id + ')' if r.signing else 'none'}")
    lines += [f"  created:       {when(r.created_at)}{origin}",
              f"  expires:       {when(r.expires_at)}",
              f"  last used:     {ago(r.last_used_at)}",
              f"  last request:  {_last_request(last)}"]
    if view.rotation is not None:
        lines.append(f"  rotated:       {ago(view.rotation.rotated_at)} to {r.replaced_by}; {_since_rotation(view)}")
    emit(click.get_current_context(), view.to_json(), "\n".join(lines))


def _last_request(last) -> str:
    if last is None:
        return "none recorded"
    verdict = "allowed" if last.allowed else "denied"
    return f"{ago(last.at)}, {verdict}, from {last.client_ip or 'an unknown address'} on route {last.route or '-'}"


def _since_rotation(view) -> str:
    """What presented a rotated key since: safe to revoke while it still works and nothing did."""
    since, key = view.rotation, view.key
    status = key.current_status
    if not since.still_used:
        return "no request since" + (f": safe to revoke (authz keys revoke {key.id})" if status == "deprecated" else "")
    said = f"since then {since.requests} request(s), the last {ago(since.last_request_at)}"
    if status == "deprecated":
        return f"{said}: still in use until {when(key.expires_at)}"
    return f"{said}: still presented, and refused ({status})"


@command(keys, "usage")
@click.argument("key_id")
@click.option("--since", "since", default="7d", show_default=True, help="How far back, in whole UTC days: 7d, 2w…")
def keys_usage(key_id, since) -> None:
    """Requests per day (allowed, denied) with a sparkline, the client networks and the
    latest request of one key."""
    days = math.ceil(parse_duration(since, "'--since'") / 86400)
    retention = default_from_env("AUTHZ_USAGE_RETENTION_DAYS")()  # what the servers keep
    report = admin().usage.report(key_id, days, retention)
    emit(click.get_current_context(), report.to_json(), _usage_text(report))


def _usage_text(report) -> str:
    rows = [("DAY", "ALLOWED", "DENIED", "TOTAL")]
    rows += [(day.to_json()["day"], str(day.allowed), str(day.denied), str(day.total)) for day in report.days]
    rows.append(("total", str(report.allowed), str(report.denied), str(report.allowed + report.denied)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    table = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
             for row in rows]
    key = report.key
    lines = [f"{key.id} ({key.principal}): {len(report.days)} day(s) to today, UTC", "", *table, "",
             f"{report.sparkline}  requests per day", ""]
    networks = report.networks
    more = " (the first ones: no more are kept)" if report.networks_capped else ""
    lines.append(f"client networks: {len(networks)}{more}" + ("" if networks else " (none recorded)"))
    lines += [f"  {n.network:<20} first seen {when(n.first_seen)}, last {ago(n.last_seen)}" for n in networks]
    lines.append(f"last used: {ago(key.last_used_at)}; last request: {_last_request(report.view.last_request)}")
    if report.view.rotation is not None:
        lines.append(f"rotated {ago(report.view.rotation.rotated_at)} to {key.replaced_by}; "
                     f"{_since_rotation(report.view)}")
    return "\n".join(lines)


@command(keys, "update")
@click.argument("key_id")
@click.option("--on-anomaly", "on_anomaly", type=click.Choice(["allow", "deny"]), required=True,
              help="deny: refuse the key while it has an anomaly nobody acknowledged; allow: only report.")
def keys_update(key_id, on_anomaly) -> None:
    """Change what an anomaly does to a key."""
    record = admin().keys.set_on_anomaly(key_id, on_anomaly)
    said = ("refused while it has an anomaly nobody acknowledged" if on_anomaly == "deny"
            else "never refused for an anomaly (they are reported)")
    emit(click.get_current_context(), record.to_json(), f"{key_id} ({record.principal}): {said}")


@command(keys, "anomalies")
@click.option("--since", "since", default="7d", show_default=True, help="How far back, e.g. 7d, 12h.")
@click.option("--ack", "ack", metavar="ID", help="Acknowledge this anomaly (a key with --on-anomaly deny "
              "is accepted again).")
def keys_anomalies(since, ack) -> None:
    """Anomalies of API keys (new client network, volume, deprecated key in its last day,
    revoked or expired key presented), newest first; or acknowledge one."""
    if ack is not None:
        anomaly = admin().anomalies.ack(ack)
        emit(click.get_current_context(), anomaly.to_json(),
             f"Acknowledged {anomaly.id} ({anomaly.kind} of {anomaly.key_id}, {anomaly.span})")
        return
    found = admin().anomalies.since(parse_duration(since, "'--since'"))
    rows = [("ID", "KEY", "KIND", "SPAN", "RAISED", "ACKED", "DETAIL")]
    rows += [(a.id, a.key_id, a.kind, a.span, when(a.at), when(a.acked_at) if a.acked_at else "no", a.detail)
             for a in found]
    emit(click.get_current_context(), [a.to_json() for a in found],
         _table(rows) if found else f"no API key anomaly in the last {since}")


@command(keys, "expiring")
@click.option("--within", default="30d", show_default=True, help="How far ahead to look, e.g. 14d.")
def keys_expiring(within) -> None:
    """Keys that stop working soon: expiring, or rotated and at the end of their grace."""
    span = parse_duration(within, "'--within'")
    records = admin().keys.expiring(span)
    rows = [("ID", "PRINCIPAL", "ENV", "STATUS", "EXPIRES", "IN", "LAST USED", "ROTATION")]
    now = time.time()
    for r in records:
        rows.append((r.id, r.principal, r.env, r.status, when(r.expires_at), _left(r.expires_at - now),
                     ago(r.last_used_at), f"-> {r.replaced_by}" if r.replaced_by else "-"))
    emit(click.get_current_context(), [r.to_json() for r in records],
         _table(rows) if records else f"no API key expires within {within}")


def _left(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{max(0, int(seconds))}s"


def _table(rows: list[tuple[str, ...]]) -> str:
    """Columns padded to their widest cell (the first row is the header)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows)


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
         f"{key_id} keeps working until {when(old.expires_at)}; `authz keys show {key_id}` tells "
         "whether anything still presents it (safe to revoke).")
