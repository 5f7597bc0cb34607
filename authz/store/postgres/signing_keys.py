"""authz's own signing keys in PostgreSQL (the private key is in the database: protect it
like any key file). A retired key stays published until ``publish_until``."""

from __future__ import annotations

import json
import time

from authz.store.interface import CHANGE_SIGNING_KEY
from authz.store.postgres.database import Database
from authz.store.records import IdentitySigningKey, NewIdentitySigningKey, SigningKeyRecord


class PostgresSigningKeys:
    def __init__(self, database: Database) -> None:
        self.database = database

    def active(self) -> IdentitySigningKey | None:
        row = self.database.one("SELECT kid, algorithm, private_pem, created_at FROM signing_keys "
                                "WHERE retired_at IS NULL ORDER BY created_at DESC LIMIT 1")
        return None if row is None else IdentitySigningKey(*row)

    def published(self) -> list[dict]:
        rows = self.database.query("SELECT public_jwk FROM signing_keys WHERE publish_until IS NULL "
                                   "OR publish_until > %s ORDER BY created_at DESC", (time.time(),))
        return [json.loads(r[0]) for r in rows]

    def install(self, key: NewIdentitySigningKey, publish_old_until: float) -> list[str]:
        with self.database.write() as tx:
            retired = [r[0] for r in tx.execute("SELECT kid FROM signing_keys WHERE retired_at IS NULL").fetchall()]
            tx.execute("UPDATE signing_keys SET retired_at = %s, publish_until = %s WHERE retired_at IS NULL",
                       (key.created_at, publish_old_until))
            tx.execute("INSERT INTO signing_keys (kid, algorithm, private_pem, public_jwk, created_at) "
                       "VALUES (%s, %s, %s, %s, %s)",
                       (key.kid, key.algorithm, key.private_pem, json.dumps(key.public_jwk), key.created_at))
            tx.execute("DELETE FROM signing_keys WHERE publish_until IS NOT NULL AND publish_until < %s",
                       (key.created_at,))
            tx.change(CHANGE_SIGNING_KEY, key.kid)
        return retired

    def list(self) -> list[SigningKeyRecord]:
        rows = self.database.query("SELECT kid, algorithm, created_at, retired_at, publish_until FROM signing_keys "
                                   "ORDER BY created_at DESC")
        return [SigningKeyRecord(*r) for r in rows]
