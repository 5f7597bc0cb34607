"""Principals (users, clients, services) and users' password hashes."""

from __future__ import annotations

import re
import time
from typing import NamedTuple

from authz.store.database import Database, StoreError

KINDS = ("user", "client", "service")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:/+=~-]{0,199}")
_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,128}")  # RFC 6749 scope-token


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise StoreError(
            f"invalid principal name {name!r}: use letters, digits and ._@:/+=~- "
            "(at most 200 characters, starting with a letter or digit)"
        )
    return name


def check_tokens(values: list[str] | tuple[str, ...], what: str) -> str:
    """Validate scopes or roles and return them space-joined for storage."""
    for value in values:
        if not _TOKEN.fullmatch(value):
            raise StoreError(f"invalid {what} {value!r}: printable ASCII, no spaces, quotes or \\")
    return " ".join(dict.fromkeys(values))


class User(NamedTuple):
    name: str
    password_hash: str | None
    scopes: frozenset[str]
    roles: frozenset[str]
    disabled: bool


class Principals:
    def __init__(self, database: Database) -> None:
        self.database = database

    def ensure(self, db, name: str, kind: str) -> tuple[int, str]:
        """Return (row id, kind) of ``name``, creating it as ``kind`` inside ``db``'s transaction."""
        row = db.execute("SELECT id, kind FROM principals WHERE name = ?", (name,)).fetchone()
        if row:
            return row[0], row[1]
        check_name(name)
        now = time.time()
        cursor = db.execute(
            "INSERT INTO principals (name, kind, created_at, updated_at) VALUES (?, ?, ?, ?)",
            (name, kind, now, now),
        )
        return cursor.lastrowid, kind

    def add_user(
        self, name: str, password_hash: str | None, scopes=(), roles=(), *, replace: bool = False
    ) -> None:
        check_name(name)
        scope_text = check_tokens(tuple(scopes), "scope")
        role_text = check_tokens(tuple(roles), "role")
        now = time.time()
        with self.database.write() as db:
            row = db.execute("SELECT kind FROM principals WHERE name = ?", (name,)).fetchone()
            if row and not replace:
                raise StoreError(f"principal {name!r} already exists")
            if row and row[0] != "user":
                raise StoreError(f"principal {name!r} exists as a {row[0]}, not a user")
            if row:
                db.execute(
                    "UPDATE principals SET password_hash = ?, scopes = ?, roles = ?, "
                    "updated_at = ? WHERE name = ?",
                    (password_hash, scope_text, role_text, now, name),
                )
            else:
                db.execute(
                    "INSERT INTO principals (name, kind, scopes, roles, password_hash, "
                    "created_at, updated_at) VALUES (?, 'user', ?, ?, ?, ?, ?)",
                    (name, scope_text, role_text, password_hash, now, now),
                )

    def find_user(self, name: str) -> User | None:
        row = self.database.execute(
            "SELECT password_hash, scopes, roles, disabled FROM principals "
            "WHERE name = ? AND kind = 'user'",
            (name,),
        ).fetchone()
        if row is None:
            return None
        return User(name, row[0], frozenset(row[1].split()), frozenset(row[2].split()), bool(row[3]))

    def set_password(self, name: str, password_hash: str, *, expected_old: str | None = None) -> bool:
        """Replace a user's hash; with ``expected_old`` only if it is still the stored one."""
        with self.database.write() as db:
            if expected_old is None:
                cursor = db.execute(
                    "UPDATE principals SET password_hash = ?, updated_at = ? "
                    "WHERE name = ? AND kind = 'user'",
                    (password_hash, time.time(), name),
                )
            else:
                cursor = db.execute(
                    "UPDATE principals SET password_hash = ?, updated_at = ? "
                    "WHERE name = ? AND kind = 'user' AND password_hash = ?",
                    (password_hash, time.time(), name, expected_old),
                )
        return cursor.rowcount == 1

    def set_disabled(self, name: str, disabled: bool = True) -> None:
        with self.database.write() as db:
            cursor = db.execute(
                "UPDATE principals SET disabled = ?, updated_at = ? WHERE name = ?",
                (int(disabled), time.time(), name),
            )
            if cursor.rowcount != 1:
                raise StoreError(f"no principal named {name!r}")

    def list(self) -> list[dict]:
        rows = self.database.execute(
            "SELECT name, kind, scopes, roles, disabled, password_hash IS NOT NULL, "
            "created_at, updated_at FROM principals ORDER BY name"
        ).fetchall()
        return [
            {
                "name": r[0], "kind": r[1], "scopes": r[2].split(), "roles": r[3].split(),
                "disabled": bool(r[4]), "has_password": bool(r[5]),
                "created_at": r[6], "updated_at": r[7],
            }
            for r in rows
        ]
