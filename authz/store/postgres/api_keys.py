"""API keys in PostgreSQL (the same reads and writes as ``store/sqlite/api_keys.py``)."""

from __future__ import annotations

from authz.store.interface import CHANGE_API_KEY
from authz.store.postgres.database import Database, Transaction
from authz.store.postgres.principals import ensure_principal
from authz.store.records import ApiKeyMatch, ApiKeyRecord, NewApiKey
from authz.store.rows import (
    EXPIRING_API_KEYS,
    FIND_API_KEY,
    LIST_API_KEYS,
    api_key_match,
    api_key_record,
    count_expiring_sql,
)


class PostgresApiKeys:
    def __init__(self, database: Database) -> None:
        self.database = database

    def find(self, fingerprint: str) -> ApiKeyMatch | None:
        return api_key_match(self.database.one(FIND_API_KEY + "k.hash = %s", (fingerprint,)))

    def find_by_id(self, key_id: str) -> ApiKeyMatch | None:
        return api_key_match(self.database.one(FIND_API_KEY + "k.id = %s", (key_id,)))

    def get(self, key_id: str) -> ApiKeyRecord | None:
        row = self.database.one(LIST_API_KEYS + "WHERE k.id = %s", (key_id,))
        return None if row is None else api_key_record(row)

    def list(self, principal: str | None = None) -> list[ApiKeyRecord]:
        if principal is None:
            rows = self.database.query(LIST_API_KEYS + "ORDER BY p.name, k.created_at")
        else:
            rows = self.database.query(LIST_API_KEYS + "WHERE p.name = %s ORDER BY k.created_at", (principal,))
        return [api_key_record(row) for row in rows]

    def fingerprints(self) -> list[str]:
        return [row[0] for row in self.database.query("SELECT hash FROM api_keys")]

    def insert(self, key: NewApiKey) -> None:
        with self.database.write() as tx:
            _insert(tx, key)

    def replace(self, old_id: str, new: NewApiKey, old_expires_at: float) -> bool:
        with self.database.write() as tx:
            row = tx.execute("SELECT status, replaced_by, hash FROM api_keys WHERE id = %s FOR UPDATE",
                             (old_id,)).fetchone()
            if row is None or row[0] == "revoked" or row[1] is not None:
                return False
            _insert(tx, new)
            tx.execute("UPDATE api_keys SET status = 'deprecated', expires_at = %s, replaced_by = %s WHERE id = %s",
                       (old_expires_at, new.id, old_id))
            tx.change(CHANGE_API_KEY, row[2])
        return True

    def revoke(self, key_id: str, at: float) -> bool:
        with self.database.write() as tx:
            row = tx.execute("SELECT hash FROM api_keys WHERE id = %s", (key_id,)).fetchone()
            if row is None:
                return False
            tx.execute("UPDATE api_keys SET status = 'revoked', revoked_at = %s WHERE id = %s AND status != 'revoked'",
                       (at, key_id))
            tx.change(CHANGE_API_KEY, row[0])
        return True

    def set_on_anomaly(self, key_id: str, on_anomaly: str) -> bool:
        with self.database.write() as tx:
            row = tx.execute("SELECT hash FROM api_keys WHERE id = %s", (key_id,)).fetchone()
            if row is None:
                return False
            tx.execute("UPDATE api_keys SET on_anomaly = %s WHERE id = %s", (on_anomaly, key_id))
            tx.change(CHANGE_API_KEY, row[0])
        return True

    def touch(self, last_used: dict[str, float]) -> None:
        # Sorted: two workers flushing overlapping batches lock rows in one order.
        with self.database.write(changes=False) as tx, tx.conn.cursor() as cursor:
            cursor.executemany(
                "UPDATE api_keys SET last_used_at = GREATEST(COALESCE(last_used_at, 0), %s) WHERE id = %s",
                [(last_used[key_id], key_id) for key_id in sorted(last_used)],
            )

    def expiring(self, after: float, until: float) -> list[ApiKeyRecord]:
        return [api_key_record(row) for row in self.database.query(EXPIRING_API_KEYS.format("%s"), (after, until))]

    def count_expiring(self, now: float, within: tuple[float, ...]) -> list[int]:
        if not within:
            return []
        ends = [now + span for span in within]
        row = self.database.one(count_expiring_sql(len(ends), "%s"), (*ends, now, max(ends)))
        return [int(count) for count in row]


def _insert(tx: Transaction, key: NewApiKey) -> None:
    principal_id = ensure_principal(tx, key.principal, "client")
    tx.execute(
        "INSERT INTO api_keys (id, principal_id, hash, display, env, scopes, allow_ips, status, created_at, "
        "expires_at, rotated_from, publishable, origins, on_anomaly, signing_alg, signing_key) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, 'active', %s, %s, %s, %s, %s, %s, %s, %s)",
        (key.id, principal_id, key.fingerprint, key.display, key.env, " ".join(key.scopes),
         " ".join(key.allow_ips), key.created_at, key.expires_at, key.rotated_from, int(key.publishable),
         " ".join(key.origins), key.on_anomaly, key.signing_alg, key.signing_key),
    )
    tx.change(CHANGE_API_KEY, key.fingerprint)
