"""API key usage in SQLite (the statements are shared: ``authz.store.usage_rows``)."""

from __future__ import annotations

from authz.store import usage_rows
from authz.store.records import KeyNetwork, KeyUsage, LastRequest, UsageHour
from authz.store.sqlite.database import Database


class SqliteKeyUsage:
    def __init__(self, database: Database) -> None:
        self.database = database

    def add(self, usage: list[KeyUsage]) -> None:
        if not usage:
            return
        with self.database.write() as db:
            usage_rows.write(db.conn.execute, db.conn.executemany, usage, "?")

    def hours(self, key_id: str, since: float) -> list[UsageHour]:
        rows = self.database.execute(usage_rows.HOURS, (key_id, usage_rows.hour_start(since))).fetchall()
        return [usage_rows.usage_hour(row) for row in rows]

    def networks(self, key_id: str) -> list[KeyNetwork]:
        return [usage_rows.key_network(row) for row in self.database.execute(usage_rows.NETWORKS, (key_id,))]

    def last_request(self, key_id: str) -> LastRequest | None:
        return usage_rows.last_request(self.database.execute(usage_rows.LAST_REQUEST, (key_id,)).fetchone())

    def last_requests(self) -> dict[str, LastRequest]:
        rows = self.database.execute(usage_rows.LAST_REQUESTS).fetchall()
        return {row[0]: usage_rows.last_request(row) for row in rows}  # type: ignore[misc]

    def prune(self, before: float) -> int:
        cutoffs = (usage_rows.hour_start(before), before, before)
        with self.database.write() as db:
            return sum(db.conn.execute(sql, (cutoff,)).rowcount for sql, cutoff in zip(usage_rows.PRUNE, cutoffs,
                                                                                         strict=True))
