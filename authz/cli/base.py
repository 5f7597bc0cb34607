"""The ``authz`` group, shared output helpers and the one-line error wrapper."""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
import time
from functools import wraps

import click

from authz.admin import Admin
from authz.config import SETTINGS, default_from_env
from authz.errors import AuthzError
from authz.store import Store, open_store, redact

_DURATION = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_DURATION = 100 * 365 * 86400


def parse_duration(text: str, option: str = "duration") -> int:
    """``90d`` / ``12h`` / ``30m`` / ``45s`` / ``2w`` (or combined, ``1d12h``) → seconds."""
    text = text.strip().lower()
    if not text or _DURATION.sub("", text):
        raise click.BadParameter(
            f"{text!r} is not a duration like 90d, 12h, 30m, 45s or 2w", param_hint=option
        )
    seconds = sum(int(n) * _UNITS[unit] for n, unit in _DURATION.findall(text))
    if seconds > MAX_DURATION:  # a date past year 9999 cannot even be printed
        raise click.BadParameter(f"{text!r} is longer than 100 years", param_hint=option)
    return seconds


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def ago(ts: float | None) -> str:
    if ts is None:
        return "never"
    seconds = max(0, int(time.time() - ts))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def emit(ctx: click.Context, data, text: str) -> None:
    if ctx.obj.get("json"):
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        click.echo(text)


def command(group: click.Group, name: str | None = None, **kwargs):
    """A subcommand with ``--json`` and one-line errors: any ``AuthzError`` (a policy,
    store, setting or request problem; a broken policy gives a line per problem), an
    OSError or bad value is ``Error: …`` and exit 1, never a traceback."""

    def decorate(func):
        @group.command(name, **kwargs)
        @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
        @click.pass_context
        @wraps(func)
        def wrapper(ctx, as_json, **params):
            ctx.obj["json"] = as_json
            try:
                return ctx.invoke(func, **params)
            except (AuthzError, ValueError) as exc:
                raise click.ClickException(str(exc)) from None
            except sqlite3.Error as exc:  # one line, never a traceback
                raise click.ClickException(f"credential store {redact(ctx.obj['db'])}: {exc}") from None
            except OSError as exc:
                raise click.ClickException(f"{exc.filename or redact(ctx.obj['db'])}: {exc.strerror or exc}") from None

        return wrapper

    return decorate


@click.group()
@click.option("--db", default=default_from_env("AUTHZ_DB"), type=click.Path(dir_okay=False),
              help="Credential store: a path, sqlite:///relative, sqlite:////absolute or postgresql://…"
                   f"  [default: $AUTHZ_DB, else {SETTINGS['AUTHZ_DB'].default_text}]")
@click.pass_context
def main(ctx: click.Context, db: str) -> None:
    """authz: authentication decisions for reverse proxies."""
    ctx.ensure_object(dict)
    ctx.obj["db"] = db


def store(ready: bool = True) -> Store:
    s = open_store(click.get_current_context().obj["db"])
    if ready:
        s.check_ready()
    return s


def admin(ready: bool = True) -> Admin:
    """The admin library over the ``--db`` store (checked ready unless ``ready=False``)."""
    return Admin(store(ready))


