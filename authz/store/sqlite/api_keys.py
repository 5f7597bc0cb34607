"""API keys in SQLite: lookup by fingerprint, listing, insert, rotation, revocation, last use.

The secret never reaches this table: rows hold its fingerprint and display form.
"""

from __future__ import annotations

from authz.store.interface import CHANGE_API_KEY
from authz.store.records import ApiKeyMatch, ApiKeyRecord, NewApiKey
from authz.store.rows import EXPIRING_API_KEYS, count_expiring_sql
from authz.store.rows import FIND_API_KEY as _FIND
from authz.store.rows import LIST_API_KEYS as _LIST
from authz.store.rows import api_key_match as _match
from authz.store.rows import api_key_record as _record
from authz.store.sqlite.database import Database, append_change
from authz.store.sqlite.principals import ensure_principal


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

    def fingerprints(self) -> list[str]:
        return [row[0] for row in self.database.execute("SELECT hash FROM api_keys").fetchall()]

    def insert(self, key: NewApiKey) -> None:
        with self.database.write() as db:
            _insert(db, key)

    def replace(self, old_id: str, new: NewApiKey, old_expires_at: float) -> bool:
        with self.database.write() as db:
            row = db.execute("SELECT status, replaced_by, hash FROM api_keys WHERE id = ?", (old_id,)).fetchone()
            if row is None or row[0] == "revoked" or row[1] is not None:
                return False
            _insert(db, new)
            db.execute("UPDATE api_keys SET status = 'deprecated', expires_at = ?, replaced_by = ? WHERE id = ?",
                       (old_expires_at, new.id, old_id))
            append_change(db, CHANGE_API_KEY, row[2])
        return True

    def revoke(self, key_id: str, at: float) -> bool:
        with self.database.write() as db:
            row = db.execute("SELECT hash FROM api_keys WHERE id = ?", (key_id,)).fetchone()
            if row is None:
                return False
            db.execute("UPDATE api_keys SET status = 'revoked', revoked_at = ? WHERE id = ? AND status != 'revoked'",
                       (at, key_id))
            append_change(db, CHANGE_API_KEY, row[0])
        return True

    def set_on_anomaly(self, key_id: str, on_anomaly: str) -> bool:
        with self.database.write() as db:
            row = db.execute("SELECT hash FROM api_keys WHERE id = ?", (key_id,)).fetchone()
            if row is None:
                return False
            db.execute("UPDATE api_keys SET on_anomaly = ? WHERE id = ?", (on_anomaly, key_id))
            append_change(db, CHANGE_API_KEY, row[0])
        return True

    def touch(self, last_used: dict[str, float]) -> None:
        with self.database.write() as db:
            db.conn.executemany(
                "UPDATE api_keys SET last_used_at = MAX(COALESCE(last_used_at, 0), ?) WHERE id = ?",
                [(ts, key_id) for key_id, ts in last_used.items()],
            )

    def expiring(self, after: float, until: float) -> list[ApiKeyRecord]:
        rows = self.database.execute(EXPIRING_API_KEYS.format("?"), (after, until)).fetchall()
        return [_record(row) for row in rows]

    def count_expiring(self, now: float, within: tuple[float, ...]) -> list[int]:
        if not within:
            return []
        ends = [now + span for span in within]
        row = self.database.execute(count_expiring_sql(len(ends), "?"), (*ends, now, max(ends))).fetchone()
        return [int(count) for count in row]


def _insert(db, key: NewApiKey) -> None:
    principal_id = ensure_principal(db, key.principal, "client")
    db.execute(
        "INSERT INTO api_keys (id, principal_id, hash, display, env, scopes, allow_ips, status, created_at, "
        "expires_at, rotated_from, publishable, origins, on_anomaly, signing_alg, signing_key) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, 'active', ?, ?, ?, ?, ?, ?, ?, ?)",
        (key.id, principal_id, key.fingerprint, key.display, key.env, " ".join(key.scopes),
         " ".join(key.allow_ips), key.created_at, key.expires_at, key.rotated_from, int(key.publishable),
         " ".join(key.origins), key.on_anomaly, key.signing_alg, key.signing_key),
    )
    append_change(db, CHANGE_API_KEY, key.fingerprint)
