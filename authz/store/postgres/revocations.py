"""Revoked token ids and certificates in PostgreSQL (see ``store/sqlite/revocations.py``)."""

from __future__ import annotations

from authz.store.interface import ANY_ISSUER, CHANGE_REVOCATION, CHANGE_REVOCATIONS, revocation_ref
from authz.store.postgres.database import Database, Transaction
from authz.store.records import Revocation

_PURGE = "DELETE FROM revocations WHERE expires_at IS NOT NULL AND expires_at < %s"


class PostgresRevocations:
    def __init__(self, database: Database) -> None:
        self.database = database

    def add(self, revocation: Revocation, now: float) -> None:
        issuer = revocation.issuer or ANY_ISSUER
        with self.database.write() as tx:
            _purge(tx, now)
            tx.execute(
                "INSERT INTO revocations (kind, issuer, value, expires_at, created_at) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (kind, issuer, value) DO UPDATE SET expires_at = CASE WHEN excluded.expires_at IS NULL "
                "OR revocations.expires_at IS NULL THEN NULL "
                "ELSE GREATEST(revocations.expires_at, excluded.expires_at) END",
                (revocation.kind, issuer, revocation.value, revocation.expires_at, now),
            )
            tx.change(CHANGE_REVOCATION, revocation_ref(revocation.kind, issuer, revocation.value))

    def is_revoked(self, kind: str, value: str, issuer: str = ANY_ISSUER) -> bool:
        return self.database.one("SELECT 1 FROM revocations WHERE kind = %s AND value = %s AND issuer IN (%s, '')",
                                 (kind, value, issuer)) is not None

    def purge(self, now: float) -> int:
        with self.database.write() as tx:
            return _purge(tx, now)

    def list(self, kind: str | None = None) -> list[Revocation]:
        rows = self.database.query("SELECT kind, issuer, value, expires_at, created_at FROM revocations "
                                   "WHERE %(kind)s::text IS NULL OR kind = %(kind)s ORDER BY created_at",
                                   {"kind": kind})
        return [Revocation(r[0], r[1] or None, r[2], r[3], r[4]) for r in rows]


def _purge(tx: Transaction, now: float) -> int:
    count = tx.execute(_PURGE, (now,)).rowcount
    if count:
        tx.change(CHANGE_REVOCATIONS, "")
    return count
