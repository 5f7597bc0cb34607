"""The change log in SQLite: what replicas follow (see ``authz.store.interface.ChangeFeed``)."""

from __future__ import annotations

from authz.store.records import Change
from authz.store.sqlite.database import Database


class SqliteChanges:
    def __init__(self, database: Database) -> None:
        self.database = database

    def latest(self) -> int:
        return self.database.execute("SELECT COALESCE(MAX(id), 0) FROM change_log").fetchone()[0]

    def since(self, after: int, limit: int = 1000) -> list[Change]:
        rows = self.database.execute("SELECT id, kind, ref FROM change_log WHERE id > ? ORDER BY id LIMIT ?",
                                     (after, limit)).fetchall()
        return [Change(*row) for row in rows]
