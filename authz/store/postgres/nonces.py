"""One-time values (DPoP proof ids) in PostgreSQL, one database for every replica (see
``store/sqlite/nonces.py``). No change-log entry: nothing a replica caches changes."""

from __future__ import annotations

import time

from authz.store.postgres.database import Database

PURGE_SECONDS = 60.0

_CLAIM = ("INSERT INTO nonces (scope, value, expires_at) VALUES (%s, %s, %s) "
          "ON CONFLICT (scope, value) DO UPDATE SET expires_at = EXCLUDED.expires_at "
          "WHERE nonces.expires_at <= %s")


class PostgresNonces:
    def __init__(self, database: Database) -> None:
        self.database = database
        self._next_purge = 0.0

    def first_use(self, scope: str, value: str, expires_at: float) -> bool:
        now = time.time()
        with self.database.write(changes=False) as tx:
            if now >= self._next_purge:
                tx.execute("DELETE FROM nonces WHERE expires_at <= %s", (now,))
                self._next_purge = now + PURGE_SECONDS
            return tx.execute(_CLAIM, (scope, value, expires_at, now)).rowcount == 1
