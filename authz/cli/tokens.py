"""``authz tokens``: revocation of bearer JWTs by jti."""

from __future__ import annotations

import click

from authz.admin import InvalidToken
from authz.cli.base import admin, command, emit, main, parse_duration, when


@main.group()
def tokens() -> None:
    """Revocation of bearer JWTs by their jti."""


@command(tokens, "revoke")
@click.option("--jti", help="The token id to refuse from now on.")
@click.option("--issuer", help="Only for this issuer (default: a token with this jti from any issuer).")
@click.option("--token", "token_file", type=click.File("r"),
              help="Read jti, iss and exp from the token itself ('-' for stdin; nothing is verified or kept).")
@click.option("--for", "keep_for", default="30d", show_default=True,
              help="How long to keep the revocation when the token's exp is unknown.")
def tokens_revoke(jti, issuer, token_file, keep_for) -> None:
    """Refuse a JWT by jti from the next request on, until it would have expired."""
    keep_seconds = parse_duration(keep_for, "'--for'")
    if not jti and token_file is None:
        raise click.UsageError("give --jti or --token")
    try:
        record = admin().tokens.revoke(jti, issuer, token=token_file.read() if token_file else None,
                                       keep_for=keep_seconds)
    except InvalidToken as exc:
        raise click.BadParameter(str(exc), param_hint="'--token'") from None
    emit(click.get_current_context(), record.to_json(),
         f"Revoked jti {record.value}{' of ' + record.issuer if record.issuer else ' (any issuer)'} "
         f"until {when(record.expires_at)}")


@command(tokens, "list")
def tokens_list() -> None:
    """Revoked token ids still on record."""
    records = admin().tokens.list()
    text = "\n".join(f"{r.value}  issuer={r.issuer or '*'}  until {when(r.expires_at)}" for r in records)
    emit(click.get_current_context(), [r.to_json() for r in records], text or "no revoked tokens")
