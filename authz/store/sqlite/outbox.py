"""The webhook outbox in SQLite (see ``authz.store.interface.WebhookOutbox``).

A claim is one write transaction (BEGIN IMMEDIATE serializes writers across every
process on the file), so two deliverers never lease the same event; ``has_due`` is a
plain read, so an idle deliverer polling takes no write lock.
"""

from __future__ import annotations

from authz.store.records import NewWebhookEvent, OutboxCounts, WebhookEvent
from authz.store.rows import COUNT_WEBHOOK_EVENTS, LIST_WEBHOOK_EVENTS, outbox_counts, webhook_event
from authz.store.sqlite.database import Database

_INSERT = ("INSERT INTO webhook_outbox (id, type, body, created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?) "
           "ON CONFLICT (id) DO NOTHING")
_DUE = "state = 'pending' AND next_attempt_at <= ? AND (lease_until IS NULL OR lease_until <= ?)"


class SqliteOutbox:
    def __init__(self, database: Database) -> None:
        self.database = database

    def enqueue(self, events: list[NewWebhookEvent]) -> int:
        with self.database.write() as db:
            return _insert(db, events)

    def cursor(self, name: str) -> float | None:
        row = self.database.execute("SELECT at FROM webhook_cursors WHERE name = ?", (name,)).fetchone()
        return None if row is None else row[0]

    def advance(self, name: str, expected: float | None, to: float, events: list[NewWebhookEvent]) -> bool:
        with self.database.write() as db:
            row = db.execute("SELECT at FROM webhook_cursors WHERE name = ?", (name,)).fetchone()
            if (None if row is None else row[0]) != expected:
                return False
            _insert(db, events)
            db.execute("INSERT INTO webhook_cursors (name, at) VALUES (?, ?) "
                       "ON CONFLICT (name) DO UPDATE SET at = excluded.at", (name, to))
        return True

    def has_due(self, now: float) -> bool:
        return self.database.execute(f"SELECT 1 FROM webhook_outbox WHERE {_DUE} LIMIT 1",  # noqa: S608
                                     (now, now)).fetchone() is not None

    def claim(self, now: float, lease_until: float, token: str, limit: int) -> list[WebhookEvent]:
        with self.database.write() as db:
            ids = [row[0] for row in db.execute(
                f"SELECT id FROM webhook_outbox WHERE {_DUE} ORDER BY next_attempt_at LIMIT ?",  # noqa: S608
                (now, now, limit)).fetchall()]
            if not ids:
                return []
            marks = ", ".join("?" * len(ids))
            db.execute(f"UPDATE webhook_outbox SET lease_until = ?, claim = ? WHERE id IN ({marks})",  # noqa: S608
                       (lease_until, token, *ids))
            rows = db.execute(LIST_WEBHOOK_EVENTS + f"WHERE id IN ({marks}) ORDER BY next_attempt_at",
                              ids).fetchall()
        return [webhook_event(row) for row in rows]

    def delivered(self, event_id: str, token: str, at: float) -> bool:
        with self.database.write() as db:
            return db.execute(
                "UPDATE webhook_outbox SET state = 'delivered', finished_at = ?, attempts = attempts + 1, "
                "lease_until = NULL, claim = NULL, last_error = NULL WHERE id = ? AND claim = ? AND state = 'pending'",
                (at, event_id, token)).rowcount == 1

    def failed(self, event_id: str, token: str, at: float, error: str, retry_at: float | None) -> bool:
        with self.database.write() as db:
            if retry_at is None:
                cursor = db.execute(
                    "UPDATE webhook_outbox SET state = 'failed', finished_at = ?, attempts = attempts + 1, "
                    "lease_until = NULL, claim = NULL, last_error = ? WHERE id = ? AND claim = ? AND state = 'pending'",
                    (at, error, event_id, token))
            else:
                cursor = db.execute(
                    "UPDATE webhook_outbox SET next_attempt_at = ?, attempts = attempts + 1, lease_until = NULL, "
                    "claim = NULL, last_error = ? WHERE id = ? AND claim = ? AND state = 'pending'",
                    (retry_at, error, event_id, token))
            return cursor.rowcount == 1

    def list(self, state: str | None = None, limit: int = 100) -> list[WebhookEvent]:
        rows = self.database.execute(LIST_WEBHOOK_EVENTS + "WHERE ? IS NULL OR state = ? "
                                     "ORDER BY created_at DESC, id LIMIT ?", (state, state, limit)).fetchall()
        return [webhook_event(row) for row in rows]

    def counts(self) -> OutboxCounts:
        return outbox_counts(self.database.execute(COUNT_WEBHOOK_EVENTS).fetchall())

    def prune(self, finished_before: float, pending_before: float) -> int:
        with self.database.write() as db:
            return db.execute("DELETE FROM webhook_outbox WHERE (state != 'pending' AND finished_at < ?) "
                              "OR (state = 'pending' AND created_at < ?)", (finished_before, pending_before)).rowcount


def _insert(db, events: list[NewWebhookEvent]) -> int:
    added = 0
    for event in events:
        added += db.execute(_INSERT, (event.id, event.type, event.body, event.created_at, event.created_at)).rowcount
    return added
