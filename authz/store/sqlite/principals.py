"""Principals (users, clients, services) and users' password hashes in SQLite."""

from __future__ import annotations

import time

from authz.store.errors import StoreError
from authz.store.interface import CHANGE_PRINCIPAL
from authz.store.records import Principal, UserCredentials
from authz.store.sqlite.database import Database, append_change


def ensure_principal(db, name: str, kind: str) -> int:
    """Row id of ``name``, created as ``kind`` if new — inside the caller's transaction
    (a statement of a table's own write, never a handle passed between tables)."""
    row = db.execute("SELECT id FROM principals WHERE name = ?", (name,)).fetchone()
    if row:
        return row[0]
    now = time.time()
    append_change(db, CHANGE_PRINCIPAL, name)
    return db.execute("INSERT INTO principals (name, kind, created_at, updated_at) VALUES (?, ?, ?, ?)",
                      (name, kind, now, now)).lastrowid


def principal_kind(db, name: str) -> str | None:
    row = db.execute("SELECT kind FROM principals WHERE name = ?", (name,)).fetchone()
    return None if row is None else row[0]


class SqlitePrincipals:
    def __init__(self, database: Database) -> None:
        self.database = database

    def add_user(self, name: str, password_hash: str | None, scopes: tuple[str, ...] = (),
                 roles: tuple[str, ...] = ()) -> None:
        now = time.time()
        with self.database.write() as db:
            kind = principal_kind(db, name)
            if kind is not None:
                raise StoreError(f"principal {name!r} already exists")
            db.execute("INSERT INTO principals (name, kind, scopes, roles, password_hash, created_at, updated_at) "
                       "VALUES (?, 'user', ?, ?, ?, ?, ?)",
                       (name, " ".join(scopes), " ".join(roles), password_hash, now, now))
            append_change(db, CHANGE_PRINCIPAL, name)

    def find_user(self, name: str) -> UserCredentials | None:
        row = self.database.execute(
            "SELECT password_hash, scopes, roles, disabled FROM principals WHERE name = ? AND kind = 'user'",
            (name,),
        ).fetchone()
        if row is None:
            return None
        return UserCredentials(name, row[0], frozenset(row[1].split()), frozenset(row[2].split()), bool(row[3]))

    def set_password(self, name: str, password_hash: str, *, expected_old: str | None = None) -> bool:
        with self.database.write() as db:
            if expected_old is None:
                cursor = db.execute(
                    "UPDATE principals SET password_hash = ?, updated_at = ? WHERE name = ? AND kind = 'user'",
                    (password_hash, time.time(), name),
                )
            else:
                cursor = db.execute(
                    "UPDATE principals SET password_hash = ?, updated_at = ? "
                    "WHERE name = ? AND kind = 'user' AND password_hash = ?",
                    (password_hash, time.time(), name, expected_old),
                )
            if cursor.rowcount == 1:
                append_change(db, CHANGE_PRINCIPAL, name)
        return cursor.rowcount == 1

    def set_disabled(self, name: str, disabled: bool = True) -> bool:
        with self.database.write() as db:
            cursor = db.execute("UPDATE principals SET disabled = ?, updated_at = ? WHERE name = ?",
                                (int(disabled), time.time(), name))
            if cursor.rowcount == 1:
                append_change(db, CHANGE_PRINCIPAL, name)
        return cursor.rowcount == 1

    def list(self) -> list[Principal]:
        rows = self.database.execute(
            "SELECT name, kind, scopes, roles, disabled, password_hash IS NOT NULL, "
            "created_at, updated_at FROM principals ORDER BY name"
        ).fetchall()
        return [Principal(r[0], r[1], tuple(r[2].split()), tuple(r[3].split()), bool(r[4]), bool(r[5]), r[6], r[7])
                for r in rows]
