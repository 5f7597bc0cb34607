"""API keys in SQLite: lookup by fingerprint, listing, insert, rotation, revocation, last use.

The secret never reaches this table: rows hold its fingerprint and display form.
"""

from __future__ import annotations

from authz.store.records import ApiKeyMatch, ApiKeyRecord, NewApiKey
from authz.store.sqlite.database import Database
from authz.store.sqlite.principals import ensure_principal

_FIND = (
    "SELECT k.id, k.env, k.scopes, k.allow_ips, k.status, k.expires_at, "
    "p.name, p.kind, p.disabled, p.roles, k.hash "
    "FROM api_keys k JOIN principals p ON p.id = k.principal_id WHERE "
)
_LIST = (
    "SELECT k.id, p.name, p.kind, k.display, k.env, k.status, k.scopes, k.allow_ips, "
    "k.created_at, k.expires_at, k.revoked_at, k.last_used_at, k.rotated_from, "
    "k.replaced_by, p.disabled FROM api_keys k JOIN principals p ON p.id = k.principal_id "
)


class SqliteApiKeys:
    def __init__(self, database: Database) -> None:
        self.database = database

    def find(self, fingerprint: str) -> ApiKeyMatch | None:
        return _match(self.database.execute(_FIND + "k.hash = ?", (fingerprint,)).fetchone())

    def find_by_id(self, key_id: str) -> ApiKeyMatch | None:
        return _match(self.database.execute(_FIND + "k.id = ?", (key_id,)).fetchone())

    def get(self, key_id: str) -> ApiKeyRecord | None:
        row = self.database.execute(_LIST + "WHERE k.id = ?", (key_id,)).fetchone()
        return None if row is None else _record(row)

    def list(self, principal: str | None = None) -> list[ApiKeyRecord]:
        if principal is None:
            rows = self.database.execute(_LIST + "ORDER BY p.name, k.created_at").fetchall()
        else:
            rows = self.database.execute(_LIST + "WHERE p.name = ? ORDER BY k.created_at", (principal,)).fetchall()
        return [_record(row) for row in rows]

    def insert(self, key: NewApiKey) -> None:
        with self.database.write() as db:
            _insert(db, key)

    def replace(self, old_id: str, new: NewApiKey, old_expires_at: float) -> bool:
        with self.database.write() as db:
            row = db.execute("SELECT status, replaced_by FROM api_keys WHERE id = ?", (old_id,)).fetchone()
            if row is None or row[0] == "revoked" or row[1] is not None:
                return False
            _insert(db, new)
            db.execute("UPDATE api_keys SET status = 'deprecated', expires_at = ?, replaced_by = ? WHERE id = ?",
                       (old_expires_at, new.id, old_id))
        return True

    def revoke(self, key_id: str, at: float) -> bool:
        with self.database.write() as db:
            if db.execute("SELECT 1 FROM api_keys WHERE id = ?", (key_id,)).fetchone() is None:
                return False
            db.execute("UPDATE api_keys SET status = 'revoked', revoked_at = ? WHERE id = ? AND status != 'revoked'",
                       (at, key_id))
        return True

    def touch(self, last_used: dict[str, float]) -> None:
        with self.database.write() as db:
            db.conn.executemany(
                "UPDATE api_keys SET last_used_at = MAX(COALESCE(last_used_at, 0), ?) WHERE id = ?",
                [(ts, key_id) for key_id, ts in last_used.items()],
            )


def _insert(db, key: NewApiKey) -> None:
    principal_id = ensure_principal(db, key.principal, "client")
    db.execute(
        "INSERT INTO api_keys (id, principal_id, hash, display, env, scopes, allow_ips, "
        "status, created_at, expires_at, rotated_from) VALUES (?, ?, ?, ?, ?, ?, ?, 'active', ?, ?, ?)",
        (key.id, principal_id, key.fingerprint, key.display, key.env, " ".join(key.scopes),
         " ".join(key.allow_ips), key.created_at, key.expires_at, key.rotated_from),
    )


def _match(row) -> ApiKeyMatch | None:
    if row is None:
        return None
    return ApiKeyMatch(row[0], row[1], frozenset(row[2].split()), row[3], row[4], row[5],
                       row[6], row[7], bool(row[8]), frozenset(row[9].split()), row[10])


def _record(row) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row[0], principal=row[1], principal_kind=row[2], display=row[3], env=row[4], status=row[5],
        scopes=tuple(row[6].split()), allow_ips=tuple(row[7].split()), created_at=row[8], expires_at=row[9],
        revoked_at=row[10], last_used_at=row[11], rotated_from=row[12], replaced_by=row[13],
        principal_disabled=bool(row[14]),
    )
