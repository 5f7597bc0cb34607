"""``authz users``: users for Basic auth."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from authz.admin.users import describe_refused
from authz.cli.base import admin, command, emit, main


@main.group()
def users() -> None:
    """Users for Basic auth."""


def read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        raise click.UsageError("no terminal to ask for the password: use --password-stdin")
    if not password:
        raise click.UsageError("empty password")
    return password


@command(users, "add")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--scope", "scopes", multiple=True)
@click.option("--role", "roles", multiple=True)
def users_add(name, password_stdin, scopes, roles) -> None:
    """Add a user with an Argon2id-hashed password."""
    a = admin()
    a.users.add(name, read_password(password_stdin), scopes, roles)
    emit(click.get_current_context(), {"name": name, "scopes": list(scopes), "roles": list(roles)},
         f"Added user {name}")


@command(users, "passwd")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def users_passwd(name, password_stdin) -> None:
    """Change a user's password (effective on the next request)."""
    a = admin()
    a.users.require(name)
    a.users.passwd(name, read_password(password_stdin))
    emit(click.get_current_context(), {"name": name}, f"Changed the password of {name}")


@command(users, "disable")
@click.argument("name")
def users_disable(name) -> None:
    """Disable a principal: its password and keys are refused from the next request."""
    admin().users.set_disabled(name, True)
    emit(click.get_current_context(), {"name": name, "disabled": True}, f"Disabled {name}")


@command(users, "enable")
@click.argument("name")
def users_enable(name) -> None:
    """Enable a disabled principal again."""
    admin().users.set_disabled(name, False)
    emit(click.get_current_context(), {"name": name, "disabled": False}, f"Enabled {name}")


@command(users, "list")
def users_list() -> None:
    """Principals with their kind, scopes, roles and state."""
    records = admin().users.list()
    text = "\n".join(
        f"{r.name}  {r.kind}  scopes={' '.join(r.scopes) or '-'}  "
        f"roles={' '.join(r.roles) or '-'}{'  DISABLED' if r.disabled else ''}"
        for r in records
    )
    emit(click.get_current_context(), [r.to_json() for r in records], text or "no principals")


@command(users, "import-htpasswd")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--scope", "scopes", multiple=True, help="Scope for every imported user.")
@click.option("--role", "roles", multiple=True, help="Role for every imported user.")
@click.option("--skip-unsupported", is_flag=True,
              help="Import the acceptable lines even if others are refused.")
def users_import_htpasswd(file, scopes, roles, skip_unsupported) -> None:
    """Import users from an Apache/nginx htpasswd file (bcrypt; see docs for refusals)."""
    a = admin()
    result = a.users.import_htpasswd(file.read_text(encoding="utf-8", errors="replace"), scopes, roles,
                                     skip_unsupported)
    emit(click.get_current_context(), result.to_json(),
         f"Imported {len(result.imported)} user(s)"
         + (f", refused {len(result.refused)}: " + describe_refused(result.refused) if result.refused else ""))
