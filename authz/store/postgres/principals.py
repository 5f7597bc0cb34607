"""Principals (users, clients, services) and users' password hashes in PostgreSQL."""

from __future__ import annotations

import time

from authz.store.errors import StoreError
from authz.store.interface import CHANGE_PRINCIPAL
from authz.store.postgres.database import Database, Transaction
from authz.store.records import Principal, UserCredentials


def ensure_principal(tx: Transaction, name: str, kind: str) -> int:
    """Row id of ``name``, created as ``kind`` if new, inside the caller's transaction."""
    row = tx.execute("SELECT id FROM principals WHERE name = %s", (name,)).fetchone()
    if row:
        return row[0]
    now = time.time()
    tx.change(CHANGE_PRINCIPAL, name)
    return tx.execute("INSERT INTO principals (name, kind, created_at, updated_at) VALUES (%s, %s, %s, %s) "
                      "RETURNING id", (name, kind, now, now)).fetchone()[0]


def principal_kind(tx: Transaction, name: str) -> str | None:
    row = tx.execute("SELECT kind FROM principals WHERE name = %s", (name,)).fetchone()
    return None if row is None else row[0]


class PostgresPrincipals:
    def __init__(self, database: Database) -> None:
        self.database = database

    def add_user(self, name: str, password_hash: str | None, scopes: tuple[str, ...] = (),
                 roles: tuple[str, ...] = ()) -> None:
        now = time.time()
        with self.database.write() as tx:
            if principal_kind(tx, name) is not None:
                raise StoreError(f"principal {name!r} already exists")
            tx.execute("INSERT INTO principals (name, kind, scopes, roles, password_hash, created_at, updated_at) "
                       "VALUES (%s, 'user', %s, %s, %s, %s, %s)",
                       (name, " ".join(scopes), " ".join(roles), password_hash, now, now))
            tx.change(CHANGE_PRINCIPAL, name)

    def find_user(self, name: str) -> UserCredentials | None:
        row = self.database.one("SELECT password_hash, scopes, roles, disabled FROM principals "
                                "WHERE name = %s AND kind = 'user'", (name,))
        if row is None:
            return None
        return UserCredentials(name, row[0], frozenset(row[1].split()), frozenset(row[2].split()), bool(row[3]))

    def set_password(self, name: str, password_hash: str, *, expected_old: str | None = None) -> bool:
        sql = "UPDATE principals SET password_hash = %s, updated_at = %s WHERE name = %s AND kind = 'user'"
        params: tuple = (password_hash, time.time(), name)
        if expected_old is not None:
            sql, params = sql + " AND password_hash = %s", (*params, expected_old)
        return self._update_principal(name, sql, params)

    def set_disabled(self, name: str, disabled: bool = True) -> bool:
        return self._update_principal(name, "UPDATE principals SET disabled = %s, updated_at = %s WHERE name = %s",
                                      (int(disabled), time.time(), name))

    def _update_principal(self, name: str, sql: str, params: tuple) -> bool:
        with self.database.write() as tx:
            updated = tx.execute(sql, params).rowcount == 1
            if updated:
                tx.change(CHANGE_PRINCIPAL, name)
        return updated

    def list(self) -> list[Principal]:
        rows = self.database.query("SELECT name, kind, scopes, roles, disabled, password_hash IS NOT NULL, "
                                   "created_at, updated_at FROM principals ORDER BY name")
        return [Principal(r[0], r[1], tuple(r[2].split()), tuple(r[3].split()), bool(r[4]), bool(r[5]), r[6], r[7])
                for r in rows]
