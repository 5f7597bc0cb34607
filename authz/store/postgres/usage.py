"""API key usage in PostgreSQL (the statements are shared: ``authz.store.usage_rows``).

Written without the change-log lock: usage is not what replicas serve, and batches from
many workers must not queue behind each other's revocations."""

from __future__ import annotations

from authz.store import usage_rows
from authz.store.postgres.database import Database
from authz.store.records import KeyNetwork, KeyUsage, LastRequest, UsageHour

_P = "%s"


class PostgresKeyUsage:
    def __init__(self, database: Database) -> None:
        self.database = database

    def add(self, usage: list[KeyUsage]) -> None:
        if not usage:
            return
        with self.database.write(changes=False) as tx, tx.conn.cursor() as cursor:
            usage_rows.write(tx.execute, cursor.executemany, usage, _P)

    def hours(self, key_id: str, since: float) -> list[UsageHour]:
        rows = self.database.query(usage_rows.placed(usage_rows.HOURS, _P), (key_id, usage_rows.hour_start(since)))
        return [usage_rows.usage_hour(row) for row in rows]

    def networks(self, key_id: str) -> list[KeyNetwork]:
        return [usage_rows.key_network(row)
                for row in self.database.query(usage_rows.placed(usage_rows.NETWORKS, _P), (key_id,))]

    def last_request(self, key_id: str) -> LastRequest | None:
        return usage_rows.last_request(self.database.one(usage_rows.placed(usage_rows.LAST_REQUEST, _P), (key_id,)))

    def last_requests(self) -> dict[str, LastRequest]:
        return {row[0]: usage_rows.last_request(row)  # type: ignore[misc]
                for row in self.database.query(usage_rows.LAST_REQUESTS)}

    def prune(self, before: float) -> int:
        cutoffs = (usage_rows.hour_start(before), before, before)
        with self.database.write(changes=False) as tx:
            return sum(tx.execute(usage_rows.placed(sql, _P), (cutoff,)).rowcount
                       for sql, cutoff in zip(usage_rows.PRUNE, cutoffs, strict=True))
