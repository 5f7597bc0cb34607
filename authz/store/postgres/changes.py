"""The change log in PostgreSQL: what replicas follow (``authz.store.interface.ChangeFeed``)."""

from __future__ import annotations

from authz.store.postgres.database import Database
from authz.store.records import Change


class PostgresChanges:
    def __init__(self, database: Database) -> None:
        self.database = database

    def latest(self) -> int:
        return self.database.one("SELECT COALESCE(MAX(id), 0) FROM change_log")[0]  # type: ignore[index]

    def since(self, after: int, limit: int = 1000) -> list[Change]:
        rows = self.database.query("SELECT id, kind, ref FROM change_log WHERE id > %s ORDER BY id LIMIT %s",
                                   (after, limit))
        return [Change(*row) for row in rows]
