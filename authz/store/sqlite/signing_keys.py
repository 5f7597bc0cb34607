"""authz's own signing keys in SQLite (the private key is kept in the store: protect the
file like any key file). A retired key stays in the published JWKS until ``publish_until``."""

from __future__ import annotations

import json
import time

from authz.store.interface import CHANGE_SIGNING_KEY
from authz.store.records import IdentitySigningKey, NewIdentitySigningKey, SigningKeyRecord
from authz.store.sqlite.database import Database, append_change


class SqliteSigningKeys:
    def __init__(self, database: Database) -> None:
        self.database = database

    def active(self) -> IdentitySigningKey | None:
        row = self.database.execute(
            "SELECT kid, algorithm, private_pem, created_at FROM signing_keys WHERE retired_at IS NULL "
            "ORDER BY created_at DESC LIMIT 1").fetchone()
        return None if row is None else IdentitySigningKey(row[0], row[1], row[2], row[3])

    def published(self) -> list[dict]:
        rows = self.database.execute(
            "SELECT public_jwk FROM signing_keys WHERE publish_until IS NULL OR publish_until > ? "
            "ORDER BY created_at DESC", (time.time(),)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def install(self, key: NewIdentitySigningKey, publish_old_until: float) -> list[str]:
        with self.database.write() as db:
            retired = [r[0] for r in db.execute("SELECT kid FROM signing_keys WHERE retired_at IS NULL").fetchall()]
            db.execute("UPDATE signing_keys SET retired_at = ?, publish_until = ? WHERE retired_at IS NULL",
                       (key.created_at, publish_old_until))
            db.execute("INSERT INTO signing_keys (kid, algorithm, private_pem, public_jwk, created_at) "
                       "VALUES (?, ?, ?, ?, ?)",
                       (key.kid, key.algorithm, key.private_pem, json.dumps(key.public_jwk), key.created_at))
            db.execute("DELETE FROM signing_keys WHERE publish_until IS NOT NULL AND publish_until < ?",
                       (key.created_at,))
            append_change(db, CHANGE_SIGNING_KEY, key.kid)
        return retired

    def list(self) -> list[SigningKeyRecord]:
        rows = self.database.execute(
            "SELECT kid, algorithm, created_at, retired_at, publish_until FROM signing_keys "
            "ORDER BY created_at DESC").fetchall()
        return [SigningKeyRecord(*r) for r in rows]
