"""Gauges that belong to the store, not to a worker, computed when ``/metrics`` is scraped.

Keys expiring soon, the webhook outbox and the store's health are facts about the
shared store: every worker (of every replica) would report the same numbers. Kept in
prometheus-client's multi-process files they would need a worker to refresh them on a
timer (a query per worker per period, whether or not anyone scrapes) and would outlive
that worker in its file; read by the worker that answers the scrape, they are current,
cost one query per scrape, and need no aggregation mode: there is one writer, now.

- ``authz_api_keys_expiring{within="7d"|"30d"}``: active keys expiring within that
  span — deprecated keys (rotated, in their grace period) are not counted, they are
  already replaced. Two series, never one per key: one indexed range count.
- ``authz_webhook_events{state="pending"|"failed"}`` and
  ``authz_webhook_oldest_pending_age_seconds``: the outbox.
- ``authz_store_up``: 1 when this worker's store can serve (``/readyz``'s check), else 0;
  ``authz_store_staleness_seconds``: PostgreSQL only, how long ago this worker last
  confirmed it is current (denials start at AUTHZ_MAX_STALENESS).

The store-derived counts are kept ``CACHE_SECONDS`` per process (several Prometheus
servers scraping every few seconds cost one count, not one each); a store that cannot
answer leaves them out of the scrape (``authz_store_up`` says why there are none).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from authz.store.errors import StoreError
from authz.store.interface import ServingStore, Store

EXPIRY_WINDOWS = (("7d", 7 * 86400.0), ("30d", 30 * 86400.0))
CACHE_SECONDS = 15.0


class StoreMetrics(Collector):
    def __init__(self, serving: ServingStore, shared: Store, cache_seconds: float = CACHE_SECONDS) -> None:
        self.serving = serving
        self.shared = shared
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._cached: tuple[float, list[GaugeMetricFamily]] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("authz_store_up", "1 when the credential store can serve this worker, else 0.")
        up.add_metric([], 0.0 if self.serving.problem() else 1.0)
        yield up
        staleness = getattr(self.serving, "staleness", None)
        if staleness is not None:
            yield GaugeMetricFamily("authz_store_staleness_seconds",
                                    "Seconds since this worker last confirmed its copy of the store is current.",
                                    value=staleness())
        yield from self._counts()

    def _counts(self) -> list[GaugeMetricFamily]:
        with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < self.cache_seconds:
                return self._cached[1]
            try:
                families = _read_counts(self.shared)
            except StoreError:
                families = []  # the store's own log says why, once per episode
            self._cached = (now, families)
            return families


def _read_counts(store: Store) -> list[GaugeMetricFamily]:
    now = time.time()
    expiring = GaugeMetricFamily("authz_api_keys_expiring", "Active API keys that expire within the span.",
                                 labels=["within"])
    counts = store.keys.count_expiring(now, tuple(span for _, span in EXPIRY_WINDOWS))
    for (label, _), count in zip(EXPIRY_WINDOWS, counts, strict=True):
        expiring.add_metric([label], count)
    outbox = store.outbox.counts()
    events = GaugeMetricFamily("authz_webhook_events", "Webhook events in the outbox, by state "
                               "(pending: to deliver; failed: given up).", labels=["state"])
    events.add_metric(["pending"], outbox.pending)
    events.add_metric(["failed"], outbox.failed)
    oldest = GaugeMetricFamily("authz_webhook_oldest_pending_age_seconds",
                               "Age of the oldest webhook event not delivered yet (0 when none).",
                               value=0.0 if outbox.oldest_pending is None else max(0.0, now - outbox.oldest_pending))
    return [expiring, events, oldest]
