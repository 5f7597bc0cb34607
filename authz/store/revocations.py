"""Revoked credentials that are not rows of their own: token ids (``jti``) and, later,
certificates. A row lives until the credential it names would have expired anyway."""

from __future__ import annotations

import time

from authz.store.database import Database, StoreError

KINDS = ("jti", "cert_fingerprint", "cert_serial")
ANY_ISSUER = ""


class Revocations:
    def __init__(self, database: Database) -> None:
        self.database = database

    def add(self, kind: str, value: str, issuer: str = ANY_ISSUER, expires_at: float | None = None) -> dict:
        if kind not in KINDS:
            raise StoreError(f"unknown revocation kind {kind!r}")
        if not value or len(value) > 1024:
            raise StoreError(f"{kind} must be 1 to 1024 characters")
        now = time.time()
        if expires_at is not None and expires_at <= now:
            raise StoreError("that credential has already expired: nothing to revoke")
        with self.database.write() as db:
            db.execute("DELETE FROM revocations WHERE expires_at IS NOT NULL AND expires_at < ?", (now,))
            db.execute(
                "INSERT INTO revocations (kind, issuer, value, expires_at, created_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (kind, issuer, value) DO UPDATE SET expires_at = "
                "CASE WHEN excluded.expires_at IS NULL OR expires_at IS NULL THEN NULL "
                "ELSE MAX(expires_at, excluded.expires_at) END",
                (kind, issuer, value, expires_at, now),
            )
        return {"kind": kind, "issuer": issuer or None, "value": value, "expires_at": expires_at}

    def is_revoked(self, kind: str, value: str, issuer: str = ANY_ISSUER) -> bool:
        """One indexed read: revoked for this issuer, or for every issuer."""
        row = self.database.execute(
            "SELECT 1 FROM revocations WHERE kind = ? AND value = ? AND issuer IN (?, '')",
            (kind, value, issuer),
        ).fetchone()
        return row is not None

    def purge(self) -> int:
        with self.database.write() as db:
            cursor = db.execute("DELETE FROM revocations WHERE expires_at IS NOT NULL AND expires_at < ?",
                                (time.time(),))
        return cursor.rowcount

    def list(self, kind: str | None = None) -> list[dict]:
        rows = self.database.execute(
            "SELECT kind, issuer, value, expires_at, created_at FROM revocations "
            "WHERE ? IS NULL OR kind = ? ORDER BY created_at",
            (kind, kind),
        ).fetchall()
        return [{"kind": r[0], "issuer": r[1] or None, "value": r[2], "expires_at": r[3], "created_at": r[4]}
                for r in rows]
