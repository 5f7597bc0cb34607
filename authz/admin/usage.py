"""API key usage as operators read it: requests per day, the client networks, the
latest request, and the safe-to-revoke view of a rotated key.

Serving processes write usage in batches (``authz.store.last_used``), so what is read
here lags the traffic by up to ``AUTHZ_LAST_USED_INTERVAL`` (30 s). Days are UTC days.

**Safe to revoke.** ``keys rotate`` leaves the old key working (``deprecated``) for a
grace period, so that its clients can move to the successor. Every request that
presents the old key from then on, allowed or denied, counts in its "requests since
the rotation"; none means that nobody moved late, and the key can be revoked without
breaking anyone (as far as servers that count usage saw: ``AUTHZ_KEY_USAGE``).
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

from authz.store.errors import StoreError
from authz.store.interface import Store
from authz.store.records import ApiKeyRecord, KeyNetwork, LastRequest, UsageHour
from authz.store.usage_rows import MAX_NETWORKS

DAY = 86400
BARS = "▁▂▃▄▅▆▇█"


def day_start(at: float) -> int:
    """The start of the UTC day ``at`` falls in."""
    return int(at // DAY) * DAY


def day_name(start: float) -> str:
    return dt.datetime.fromtimestamp(start, dt.UTC).strftime("%Y-%m-%d")


def sparkline(values: list[int]) -> str:
    """One bar per value, scaled to the largest: ``▁`` is nothing at all, ``▂`` to ``█``
    some requests (so a quiet day never looks like an idle one)."""
    peak = max(values, default=0)
    return "".join(BARS[0] if not value else BARS[1 + round(value / peak * (len(BARS) - 2))] for value in values)


@dataclass(frozen=True)
class DayUsage:
    start: int
    allowed: int
    denied: int

    @property
    def total(self) -> int:
        return self.allowed + self.denied

    def to_json(self) -> dict:
        return {"day": day_name(self.start), "start": self.start, "allowed": self.allowed, "denied": self.denied}


@dataclass(frozen=True)
class RotationView:
    """A rotated key: what presented it since the rotation (the successor's creation)."""

    replaced_by: str
    rotated_at: float | None
    requests: int
    last_request_at: float | None  # only if after the rotation

    @property
    def still_used(self) -> bool:
        return self.requests > 0

    def to_json(self) -> dict:
        return {"replaced_by": self.replaced_by, "rotated_at": self.rotated_at, "requests": self.requests,
                "last_request_at": self.last_request_at, "still_used": self.still_used}


@dataclass(frozen=True)
class KeyView:
    """A key as ``keys list`` and ``keys show`` tell it: the record, its latest request
    and, once rotated, what used it since."""

    key: ApiKeyRecord
    last_request: LastRequest | None
    rotation: RotationView | None

    @property
    def last_seen(self) -> float | None:
        """The latest time it was presented: accepted (last used) or refused."""
        times = [t for t in (self.key.last_used_at, self.last_request and self.last_request.at) if t]
        return max(times, default=None)

    def to_json(self) -> dict:
        return {**self.key.to_json(),
                "last_request": None if self.last_request is None else self.last_request.to_json(),
                "since_rotation": None if self.rotation is None else self.rotation.to_json()}


@dataclass(frozen=True)
class KeyUsageReport:
    """``keys usage``: a key's requests per UTC day from ``since`` (a day's start) to today."""

    key: ApiKeyRecord
    since: int
    days: tuple[DayUsage, ...]
    hours: tuple[UsageHour, ...]
    networks: tuple[KeyNetwork, ...]
    view: KeyView

    @property
    def allowed(self) -> int:
        return sum(day.allowed for day in self.days)

    @property
    def denied(self) -> int:
        return sum(day.denied for day in self.days)

    @property
    def sparkline(self) -> str:
        return sparkline([day.total for day in self.days])

    @property
    def networks_capped(self) -> bool:
        """Whether the key met more networks than are kept (the first ``MAX_NETWORKS``)."""
        return len(self.networks) >= MAX_NETWORKS

    def to_json(self) -> dict:
        return {"key": self.key.id, "principal": self.key.principal, "since": self.since,
                "allowed": self.allowed, "denied": self.denied, "sparkline": self.sparkline,
                "days": [day.to_json() for day in self.days], "hours": [hour.to_json() for hour in self.hours],
                "networks": [network.to_json() for network in self.networks],
                "networks_capped": self.networks_capped,
                "last_used_at": self.key.last_used_at,
                "last_request": None if self.view.last_request is None else self.view.last_request.to_json(),
                "since_rotation": None if self.view.rotation is None else self.view.rotation.to_json()}


class UsageAdmin:
    def __init__(self, store: Store) -> None:
        self.store = store

    def report(self, key_id: str, days: int, retention_days: int, now: float | None = None) -> KeyUsageReport:
        """The last ``days`` UTC days of ``key_id`` (today included)."""
        if not 1 <= days <= retention_days:
            raise StoreError(f"usage is kept for {retention_days} days (AUTHZ_USAGE_RETENTION_DAYS): "
                             f"ask for 1 to {retention_days} days, not {days}")
        view = self.view(key_id)
        today = day_start(time.time() if now is None else now)
        since = today - (days - 1) * DAY
        hours = self.store.usage.hours(key_id, since)
        totals = {start: [0, 0] for start in range(since, today + DAY, DAY)}
        for hour in hours:
            day = totals.get(day_start(hour.hour))
            if day is not None:
                day[0] += hour.allowed
                day[1] += hour.denied
        return KeyUsageReport(view.key, since, tuple(DayUsage(start, a, d) for start, (a, d) in totals.items()),
                              tuple(hours), tuple(self.store.usage.networks(key_id)), view)

    def view(self, key_id: str) -> KeyView:
        key = self.store.keys.get(key_id)
        if key is None:
            raise StoreError(f"no API key with id {key_id!r}")
        successor = self.store.keys.get(key.replaced_by) if key.replaced_by else None
        return _view(key, self.store.usage.last_request(key_id), successor)

    def views(self, principal: str | None = None, unused_for: float | None = None,
              now: float | None = None) -> list[KeyView]:
        """Every key (of ``principal``), as ``keys list`` shows them; with ``unused_for``
        (seconds), only the keys that could be used (not revoked nor expired) and were
        not presented for that long: never since created that long ago, or last seen
        before then."""
        keys = self.store.keys.list(principal)
        last = self.store.usage.last_requests()
        by_id = {key.id: key for key in keys}  # a successor has its predecessor's principal
        views = [_view(key, last.get(key.id), by_id.get(key.replaced_by) if key.replaced_by else None)
                 for key in keys]
        if unused_for is None:
            return views
        if unused_for <= 0:
            raise StoreError("the unused period must be longer than nothing")
        cutoff = (time.time() if now is None else now) - unused_for
        return [view for view in views if view.key.current_status in ("active", "deprecated")
                and (view.last_seen or view.key.created_at) < cutoff]


def _view(key: ApiKeyRecord, last: LastRequest | None, successor: ApiKeyRecord | None) -> KeyView:
    rotation = None
    if key.replaced_by:
        rotated_at = successor.created_at if successor is not None else None
        requests = last.after_rotation if last is not None else 0
        at = last.at if last is not None and requests and (rotated_at is None or last.at >= rotated_at) else None
        rotation = RotationView(key.replaced_by, rotated_at, requests, at)
    return KeyView(key, last, rotation)
