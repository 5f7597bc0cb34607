"""``authz tokens``: revocation of bearer JWTs by jti."""

from __future__ import annotations

import json
import time

import click

from authz.cli.base import command, emit, main, parse_duration, store, when


@main.group()
def tokens() -> None:
    """Revocation of bearer JWTs by their jti."""


def _unverified_claims(text: str) -> dict:
    import base64

    parts = text.strip().split(".")
    if len(parts) != 3:
        raise click.BadParameter("not a JWT (three dot-separated parts)", param_hint="'--token'")
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        raise click.BadParameter("the JWT payload is not base64url JSON", param_hint="'--token'") from None
    if not isinstance(claims, dict):
        raise click.BadParameter("the JWT payload is not a JSON object", param_hint="'--token'")
    return claims


@command(tokens, "revoke")
@click.option("--jti", help="The token id to refuse from now on.")
@click.option("--issuer", help="Only for this issuer (default: a token with this jti from any issuer).")
@click.option("--token", "token_file", type=click.File("r"),
              help="Read jti, iss and exp from the token itself ('-' for stdin; nothing is verified or kept).")
@click.option("--for", "keep_for", default="30d", show_default=True,
              help="How long to keep the revocation when the token's exp is unknown.")
def tokens_revoke(jti, issuer, token_file, keep_for) -> None:
    """Refuse a JWT by jti from the next request on, until it would have expired."""
    expires_at = time.time() + parse_duration(keep_for, "'--for'")
    if token_file is not None:
        claims = _unverified_claims(token_file.read())
        if not isinstance(claims.get("jti"), str):
            raise click.BadParameter("the token has no jti claim: it cannot be revoked by id",
                                     param_hint="'--token'")
        jti = jti or claims["jti"]
        issuer = issuer or claims.get("iss")
        if isinstance(claims.get("exp"), int | float):
            expires_at = float(claims["exp"]) + 300  # beyond any configured leeway
    if not jti:
        raise click.UsageError("give --jti or --token")
    record = store().revocations.add("jti", jti, issuer or "", expires_at)
    emit(click.get_current_context(), record,
         f"Revoked jti {jti}{' of ' + issuer if issuer else ' (any issuer)'} until {when(record['expires_at'])}")


@command(tokens, "list")
def tokens_list() -> None:
    """Revoked token ids still on record."""
    records = store().revocations.list("jti")
    text = "\n".join(f"{r['value']}  issuer={r['issuer'] or '*'}  until {when(r['expires_at'])}" for r in records)
    emit(click.get_current_context(), records, text or "no revoked tokens")
