"""Revoked credentials that are not rows of their own in SQLite: token ids (``jti``) and
certificates. A row lives until the credential it names would have expired anyway."""

from __future__ import annotations

from authz.store.interface import ANY_ISSUER, CHANGE_REVOCATION, CHANGE_REVOCATIONS, revocation_ref
from authz.store.records import Revocation
from authz.store.sqlite.database import Database, append_change


class SqliteRevocations:
    def __init__(self, database: Database) -> None:
        self.database = database

    def add(self, revocation: Revocation, now: float) -> None:
        with self.database.write() as db:
            if db.execute("DELETE FROM revocations WHERE expires_at IS NOT NULL AND expires_at < ?",
                          (now,)).rowcount:
                append_change(db, CHANGE_REVOCATIONS, "")
            db.execute(
                "INSERT INTO revocations (kind, issuer, value, expires_at, created_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (kind, issuer, value) DO UPDATE SET expires_at = "
                "CASE WHEN excluded.expires_at IS NULL OR expires_at IS NULL THEN NULL "
                "ELSE MAX(expires_at, excluded.expires_at) END",
                (revocation.kind, revocation.issuer or ANY_ISSUER, revocation.value, revocation.expires_at, now),
            )
            append_change(db, CHANGE_REVOCATION, revocation_ref(revocation.kind, revocation.issuer or ANY_ISSUER,
                                                                revocation.value))

    def is_revoked(self, kind: str, value: str, issuer: str = ANY_ISSUER) -> bool:
        row = self.database.execute(
            "SELECT 1 FROM revocations WHERE kind = ? AND value = ? AND issuer IN (?, '')",
            (kind, value, issuer),
        ).fetchone()
        return row is not None

    def purge(self, now: float) -> int:
        with self.database.write() as db:
            cursor = db.execute("DELETE FROM revocations WHERE expires_at IS NOT NULL AND expires_at < ?", (now,))
            if cursor.rowcount:
                append_change(db, CHANGE_REVOCATIONS, "")
        return cursor.rowcount

    def list(self, kind: str | None = None) -> list[Revocation]:
        rows = self.database.execute(
            "SELECT kind, issuer, value, expires_at, created_at FROM revocations "
            "WHERE ? IS NULL OR kind = ? ORDER BY created_at",
            (kind, kind),
        ).fetchall()
        return [Revocation(r[0], r[1] or None, r[2], r[3], r[4]) for r in rows]
