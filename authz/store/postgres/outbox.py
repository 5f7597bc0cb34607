"""The webhook outbox in PostgreSQL (see ``authz.store.interface.WebhookOutbox``).

A claim is one ``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED)``: deliverers
on every replica claim at once without waiting for each other, and never the same row.
Outbox writes take no change-log lock: events are not serving state.
"""

from __future__ import annotations

from authz.store.postgres.database import Database, Transaction
from authz.store.records import NewWebhookEvent, OutboxCounts, WebhookEvent
from authz.store.rows import COUNT_WEBHOOK_EVENTS, LIST_WEBHOOK_EVENTS, outbox_counts, webhook_event

_INSERT = ("INSERT INTO webhook_outbox (id, type, body, created_at, next_attempt_at) "
           "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING")
_DUE = "state = 'pending' AND next_attempt_at <= %(now)s AND (lease_until IS NULL OR lease_until <= %(now)s)"
_COLUMNS = LIST_WEBHOOK_EVENTS.removeprefix("SELECT ").split(" FROM ")[0]


class PostgresOutbox:
    def __init__(self, database: Database) -> None:
        self.database = database

    def enqueue(self, events: list[NewWebhookEvent]) -> int:
        with self.database.write(changes=False) as tx:
            return _insert(tx, events)

    def cursor(self, name: str) -> float | None:
        row = self.database.one("SELECT at FROM webhook_cursors WHERE name = %s", (name,))
        return None if row is None else row[0]

    def advance(self, name: str, expected: float | None, to: float, events: list[NewWebhookEvent]) -> bool:
        with self.database.write(changes=False) as tx:
            if expected is None:  # a first look: the primary key lets one of several in
                if tx.execute("INSERT INTO webhook_cursors (name, at) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
                              (name, to)).rowcount != 1:
                    return False
            else:  # the row lock serializes advancers
                row = tx.execute("SELECT at FROM webhook_cursors WHERE name = %s FOR UPDATE", (name,)).fetchone()
                if row is None or row[0] != expected:
                    return False
                tx.execute("UPDATE webhook_cursors SET at = %s WHERE name = %s", (to, name))
            _insert(tx, events)
        return True

    def has_due(self, now: float) -> bool:
        return self.database.one(f"SELECT 1 FROM webhook_outbox WHERE {_DUE} LIMIT 1",  # noqa: S608 — constant
                                 {"now": now}) is not None

    def claim(self, now: float, lease_until: float, token: str, limit: int) -> list[WebhookEvent]:
        with self.database.write(changes=False) as tx:
            rows = tx.execute(
                f"UPDATE webhook_outbox SET lease_until = %(lease)s, claim = %(token)s WHERE id IN ("  # noqa: S608
                f"SELECT id FROM webhook_outbox WHERE {_DUE} ORDER BY next_attempt_at LIMIT %(limit)s "
                f"FOR UPDATE SKIP LOCKED) RETURNING {_COLUMNS}",
                {"now": now, "lease": lease_until, "token": token, "limit": limit}).fetchall()
        return sorted((webhook_event(row) for row in rows), key=lambda event: (event.next_attempt_at, event.id))

    def delivered(self, event_id: str, token: str, at: float) -> bool:
        with self.database.write(changes=False) as tx:
            return tx.execute(
                "UPDATE webhook_outbox SET state = 'delivered', finished_at = %s, attempts = attempts + 1, "
                "lease_until = NULL, claim = NULL, last_error = NULL "
                "WHERE id = %s AND claim = %s AND state = 'pending'", (at, event_id, token)).rowcount == 1

    def failed(self, event_id: str, token: str, at: float, error: str, retry_at: float | None) -> bool:
        with self.database.write(changes=False) as tx:
            if retry_at is None:
                cursor = tx.execute(
                    "UPDATE webhook_outbox SET state = 'failed', finished_at = %s, attempts = attempts + 1, "
                    "lease_until = NULL, claim = NULL, last_error = %s "
                    "WHERE id = %s AND claim = %s AND state = 'pending'", (at, error, event_id, token))
            else:
                cursor = tx.execute(
                    "UPDATE webhook_outbox SET next_attempt_at = %s, attempts = attempts + 1, lease_until = NULL, "
                    "claim = NULL, last_error = %s WHERE id = %s AND claim = %s AND state = 'pending'",
                    (retry_at, error, event_id, token))
            return cursor.rowcount == 1

    def list(self, state: str | None = None, limit: int = 100) -> list[WebhookEvent]:
        rows = self.database.query(LIST_WEBHOOK_EVENTS + "WHERE %(state)s::text IS NULL OR state = %(state)s "
                                   "ORDER BY created_at DESC, id LIMIT %(limit)s", {"state": state, "limit": limit})
        return [webhook_event(row) for row in rows]

    def counts(self) -> OutboxCounts:
        return outbox_counts(self.database.query(COUNT_WEBHOOK_EVENTS))

    def prune(self, finished_before: float, pending_before: float) -> int:
        with self.database.write(changes=False) as tx:
            return tx.execute("DELETE FROM webhook_outbox WHERE (state != 'pending' AND finished_at < %s) "
                              "OR (state = 'pending' AND created_at < %s)", (finished_before, pending_before)).rowcount


def _insert(tx: Transaction, events: list[NewWebhookEvent]) -> int:
    added = 0
    for event in events:
        added += tx.execute(_INSERT, (event.id, event.type, event.body, event.created_at, event.created_at)).rowcount
    return added
