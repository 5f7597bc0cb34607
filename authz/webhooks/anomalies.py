"""API key anomalies: noticed as usage is written, judged against the store.

**Where.** Not on the hot path (a request appends one tuple to a deque and goes on):
each serving process's usage thread (``authz.store.last_used``) hands every batch it
wrote to ``AnomalyDetector.look``, which reads what the store now holds for those keys
— every worker's and replica's requests, not just this process's — and judges:

- ``revoked_presented`` / ``expired_presented``: the key was presented (its secret
  matched) after its revocation or expiry: a leak, or a deployment nobody updated;
- ``deprecated_in_use``: a rotated key still used in the last day of its grace period:
  whatever uses it breaks tomorrow;
- ``new_network``: the first request from a client network (IPv4 /24, IPv6 /48) the key
  was never seen from, once the key has ``learning`` seconds of history (its first
  networks are its normal). Not for publishable keys: they are used from every visitor's
  network by design;
- ``volume``: an hour with at least ``minimum`` requests and more than ``factor`` times
  the key's median hour over the ``trailing`` seconds before it, once it has ``learning``
  seconds of history. The median is over the hours the key was used in: a key idle at
  night would otherwise have a median of 0 and every busy hour would alert.

**One anomaly per (key, kind, span).** The span is the day (presented), the grace
period's end (deprecated), the network, or the hour (volume). The store's row id is
derived from the three, so however many workers, replicas and batches notice it, one
insert writes the row; only that process counts it (``authz_api_key_anomalies_total``),
logs it (an ``api_key.anomaly`` line in the decision log) and hands the webhook an
event, whose delivery id is derived from the same three. A process also remembers what
it already raised, so a revoked key presented all day costs one insert attempt.

Nothing here blocks a key: a key created or updated with ``--on-anomaly deny`` is refused
while it has an anomaly nobody acknowledged (``authz keys anomalies --ack ID``).
"""

from __future__ import annotations

import datetime as dt
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from authz.config import Settings
from authz.observability import metrics
from authz.store.anomaly_rows import anomaly_id
from authz.store.interface import Store
from authz.store.records import ApiKeyRecord, KeyAnomaly, KeyUsage
from authz.webhooks.events import enqueue, event

EVENT = "api_key.anomaly"
NEW_NETWORK, VOLUME, DEPRECATED_IN_USE = "new_network", "volume", "deprecated_in_use"
REVOKED_PRESENTED, EXPIRED_PRESENTED = "revoked_presented", "expired_presented"
KINDS = (NEW_NETWORK, VOLUME, DEPRECATED_IN_USE, REVOKED_PRESENTED, EXPIRED_PRESENTED)
HOUR = 3600
DAY = 86400.0
_REMEMBER = 100_000  # spans a process remembers having raised (then it forgets them all and asks the store)


@dataclass(frozen=True)
class Thresholds:
    learning: float = 7 * DAY
    factor: float = 10.0
    minimum: int = 1000
    trailing: float = 7 * DAY

    @classmethod
    def from_settings(cls, settings: Settings) -> Thresholds:
        return cls(settings.anomaly_learning_days * DAY, settings.anomaly_volume_factor,
                   settings.anomaly_volume_min, settings.anomaly_trailing_days * DAY)


def _day(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d")


def _hour(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%dT%H:00Z")


def _when(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


Finding = tuple[str, str, str]  # kind, span, detail


def presented(key: ApiKeyRecord, usage: KeyUsage) -> list[Finding]:
    """Revoked, expired, or deprecated in its last day, and presented all the same."""
    at, requests = usage.last_at, sum(a + d for _, a, d in usage.hours)
    source = f"last from {usage.last_client_ip or 'an unknown address'}" + (
        f" on route {usage.last_route}" if usage.last_route else "")
    if key.status == "revoked":
        if key.revoked_at is not None and at < key.revoked_at:
            return []
        return [(REVOKED_PRESENTED, _day(at),
                 f"revoked API key {key.id} was presented {requests} time(s), {source}")]
    if key.expires_at is None:
        return []
    if at >= key.expires_at:
        return [(EXPIRED_PRESENTED, _day(at), f"API key {key.id}, expired {_when(key.expires_at)}, "
                 f"was presented {requests} time(s), {source}")]
    if key.status == "deprecated" and at >= key.expires_at - DAY:
        return [(DEPRECATED_IN_USE, "grace until " + _when(key.expires_at),
                 f"API key {key.id} was rotated (replaced by {key.replaced_by}) and is still used, {source}; "
                 f"its grace period ends {_when(key.expires_at)}")]
    return []


def new_networks(key: ApiKeyRecord, usage: KeyUsage, stored: dict[str, float], learning: float) -> list[Finding]:
    """Networks whose first sighting is in this batch (the store holds no earlier one),
    after the key's ``learning`` seconds from its first stored sighting."""
    if key.publishable or not stored:
        return []
    earliest = min(stored.values())
    found = []
    for network, first, _ in usage.networks:
        if stored.get(network) == first and first > earliest and first >= earliest + learning:
            found.append((NEW_NETWORK, network, f"API key {key.id} was presented from {network}, a client network "
                          f"it was never seen from since {_when(earliest)} (from {usage.last_client_ip})"))
    return found


def volumes(key: ApiKeyRecord, usage: KeyUsage, stored: dict[int, int], limits: Thresholds) -> list[Finding]:
    """Hours of this batch whose stored total is at least ``minimum`` and more than
    ``factor`` times the median of the key's used hours in the ``trailing`` seconds before."""
    if not stored:
        return []
    first = min(stored)
    found = []
    for hour in sorted({h for h, _, _ in usage.hours}):
        total = stored.get(hour, 0)
        if total < limits.minimum or hour - first < max(limits.learning, HOUR):
            continue
        before = [n for h, n in stored.items() if hour - limits.trailing <= h < hour and n > 0]
        if not before:
            continue
        median = statistics.median(before)
        if total > limits.factor * median:
            found.append((VOLUME, _hour(hour), f"API key {key.id}: {total} requests in the hour from {_hour(hour)}, "
                          f"more than {limits.factor:g} times its median hour ({median:g}) "
                          f"over the {len(before)} used hour(s) before"))
    return found


class AnomalyDetector:
    """Judges the batches a process wrote (``look``) and raises what it finds, once."""

    def __init__(self, store: Store, limits: Thresholds, log_event: Callable[..., None] | None = None,
                 announce: bool = False) -> None:
        self.store = store
        self.limits = limits
        self.log_event = log_event  # DecisionLog.event
        self.announce = announce  # someone delivers webhooks (AUTHZ_WEBHOOK_URL): enqueue events
        self._raised: set[tuple[str, str, str]] = set()
        metrics.anomaly_kinds(KINDS)

    def look(self, batch: list[KeyUsage]) -> list[KeyAnomaly]:
        """Judge each key of a written batch; the anomalies this process raised (stored first)."""
        raised = []
        for usage in batch:
            key = self.store.keys.get(usage.key_id)
            if key is None:
                continue
            for kind, span, detail in self.findings(key, usage):
                anomaly = self.raise_(key, kind, span, detail)
                if anomaly is not None:
                    raised.append(anomaly)
        return raised

    def findings(self, key: ApiKeyRecord, usage: KeyUsage) -> list[Finding]:
        found = presented(key, usage)
        if key.status == "revoked":
            return found  # refused anyway: where and how much no longer matter
        if usage.networks and not key.publishable:
            stored = {n.network: n.first_seen for n in self.store.usage.networks(key.id)}
            found += new_networks(key, usage, stored, self.limits.learning)
        if usage.hours:
            since = min(h for h, _, _ in usage.hours) - max(self.limits.trailing, self.limits.learning) - HOUR
            stored_hours = {h.hour: h.allowed + h.denied for h in self.store.usage.hours(key.id, since)}
            found += volumes(key, usage, stored_hours, self.limits)
        return found

    def raise_(self, key: ApiKeyRecord, kind: str, span: str, detail: str) -> KeyAnomaly | None:
        """Store the anomaly unless already stored; announce it only if this insert wrote it."""
        memo = (key.id, kind, span)
        if memo in self._raised:
            return None
        anomaly = KeyAnomaly(anomaly_id(*memo), key.id, kind, span, time.time(), detail)
        new = self.store.anomalies.add(anomaly)
        if len(self._raised) >= _REMEMBER:
            self._raised.clear()
        self._raised.add(memo)
        if not new:
            return None
        metrics.anomaly(kind)
        if self.log_event is not None:
            self.log_event(EVENT, ("id", anomaly.id), ("kind", kind), ("credential", key.id),
                           ("principal", key.principal), ("span", span), ("detail", detail))
        if self.announce:
            data = {"anomaly_id": anomaly.id, "key_id": key.id, "principal": key.principal, "kind": kind,
                    "span": span, "detail": detail}
            enqueue(self.store.outbox, [event(EVENT, data, dedupe=(key.id, kind, span), at=anomaly.at)])
        return anomaly
