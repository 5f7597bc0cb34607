"""One-time values (DPoP proof ids) in SQLite: insert-or-fail, shared by every worker
that opens the file. Expired rows are dropped by the writes themselves, at most once
per ``PURGE_SECONDS`` per process, so the table holds about one window of values."""

from __future__ import annotations

import time

from authz.store.sqlite.database import Database

PURGE_SECONDS = 60.0

# A value already recorded is replaced only when its record has expired: the row count
# says whether this use was the first (1) or a replay (0).
_CLAIM = ("INSERT INTO nonces (scope, value, expires_at) VALUES (?, ?, ?) "
          "ON CONFLICT (scope, value) DO UPDATE SET expires_at = excluded.expires_at "
          "WHERE nonces.expires_at <= ?")


class SqliteNonces:
    def __init__(self, database: Database) -> None:
        self.database = database
        self._next_purge = 0.0

    def first_use(self, scope: str, value: str, expires_at: float) -> bool:
        now = time.time()
        with self.database.write() as db:
            if now >= self._next_purge:
                db.execute("DELETE FROM nonces WHERE expires_at <= ?", (now,))
                self._next_purge = now + PURGE_SECONDS
            return db.execute(_CLAIM, (scope, value, expires_at, now)).rowcount == 1
