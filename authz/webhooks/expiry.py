"""Expiry events: keys whose remaining lifetime crosses 30, 7 or 1 days, keys that
expired, and rotated keys whose grace period ended.

**Crossings, not states.** A key is announced when its remaining lifetime *crosses* a
threshold, so a scan looks at a span of time (``start``, ``end``] and asks the index on
``expires_at`` for four narrow ranges — (start + T, end + T] for T = 30, 7, 1 days, and
(start, end] for what ended — never for every key inside 30 days (with a million keys,
that could be a third of them, every minute, in every worker). A key created with less
than 30 days to live is announced at the thresholds it crosses later (a 5-day key: at
1 day), and when it expires.

**Once.** How far the scan has looked is a cursor in the store, advanced in the same
transaction that enqueues the span's events and only from the value that was read
(``WebhookOutbox.advance``): whatever the number of workers and replicas scanning, each
span is looked at once, and a restart continues where the last look ended. Ids are
derived from (type, key, threshold), so even a span looked at twice (a copied store
with an older cursor) gives each event once. The first scan ever only sets the cursor;
after an outage, at most ``MAX_CATCH_UP`` is looked at (older news is stale).
"""

from __future__ import annotations

from authz.store.interface import ApiKeyTable, Store
from authz.store.records import ApiKeyRecord
from authz.webhooks.events import Event, event

DAY = 86400.0
THRESHOLDS = (30 * DAY, 7 * DAY, 1 * DAY)  # longest first
CURSOR = "api_key_expiry"
MAX_CATCH_UP = 7 * DAY

EXPIRING, EXPIRED, GRACE_ENDED = "api_key.expiring", "api_key.expired", "api_key.grace_ended"


def events_between(keys: ApiKeyTable, start: float, end: float) -> list[Event]:
    """The events of the span (``start``, ``end``]."""
    crossed: dict[str, tuple[float, ApiKeyRecord]] = {}
    for threshold in THRESHOLDS:  # a key that crossed several (a long span): the shortest wins
        for record in keys.expiring(start + threshold, end + threshold):
            if record.status == "active" and record.expires_at is not None and record.expires_at > end:
                crossed[record.id] = (threshold, record)
    found = [_expiring(record, threshold) for threshold, record in crossed.values()]
    for record in keys.expiring(start, end):
        if record.status == "active":
            found.append(_ended(EXPIRED, record))
        elif record.status == "deprecated":
            found.append(_ended(GRACE_ENDED, record, replaced_by=record.replaced_by))
    return found


def scan(store: Store, now: float, min_span: float = 0.0) -> int | None:
    """Look at the span since the last look (by any process) and enqueue its events.
    Returns how many events the span gave; None when another process looked at it first.
    A span shorter than ``min_span`` is left for the next look."""
    start = store.outbox.cursor(CURSOR)
    if start is None:
        return 0 if store.outbox.advance(CURSOR, None, now, []) else None
    if now - start < max(min_span, 0.0) or now <= start:
        return 0
    found = events_between(store.keys, max(start, now - MAX_CATCH_UP), now)
    return len(found) if store.outbox.advance(CURSOR, start, now, [e.new(now) for e in found]) else None


def _about(record: ApiKeyRecord) -> dict:
    """What an event says about a key: its id and owner, never the key itself."""
    return {"key_id": record.id, "principal": record.principal, "principal_kind": record.principal_kind,
            "env": record.env, "publishable": record.publishable, "expires_at": record.expires_at,
            "last_used_at": record.last_used_at}


def _expiring(record: ApiKeyRecord, threshold: float) -> Event:
    days = round(threshold / DAY)
    assert record.expires_at is not None
    return event(EXPIRING, {**_about(record), "days": days}, dedupe=(record.id, str(days)),
                 at=record.expires_at - threshold)


def _ended(kind: str, record: ApiKeyRecord, **more: object) -> Event:
    assert record.expires_at is not None
    return event(kind, {**_about(record), **more}, dedupe=(record.id,), at=record.expires_at)
