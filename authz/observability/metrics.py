"""Prometheus metrics, correct under several gunicorn workers.

With ``PROMETHEUS_MULTIPROC_DIR`` set (``make run`` and the deploy configs set it; it
must exist and be emptied before the server starts), every worker writes its samples
there and ``/metrics`` adds them up (prometheus-client's multiprocess mode); without
it, each process reports its own.

What every decision counts (decisions, the duration histogram, authenticator outcomes,
cache lookups) is summed in this process and written to the shared files in batches,
at most ``FLUSH_SECONDS`` apart, before this process answers ``/metrics``, and at exit:
the multi-process files cost a lock, a ``getpid`` and an mmap write per increment —
four or five per decision, a fifth of the cost of a whole request. A scrape may
therefore miss another worker's last quarter second; nothing is lost.
"""

from __future__ import annotations

import os
import threading
from bisect import bisect_left

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.registry import Collector

from authz.background import ProcessThread, at_exit

DECISIONS = Counter("authz_decisions_total", "Decisions by route, outcome and reason.",
                    ["route", "decision", "reason"])
DURATION = Histogram("authz_decision_duration_seconds", "Time from request to answer inside authz.",
                     buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5))
RELOADS = Counter("authz_policy_reloads_total", "Policy reloads by result.", ["result"])
# "mostrecent": the master of a preloading server set the boot revision to 1 and never
# reloads; the newest write (a worker's 0 after a reload) must win, not the maximum.
POLICY = Gauge("authz_policy_info", "The policy revision being served (1).", ["revision"],
               multiprocess_mode="mostrecent")
OUTCOMES = Counter("authz_authenticator_outcomes_total", "What each authenticator concluded.",
                   ["authenticator", "type", "outcome"])
CACHE = Counter("authz_cache_lookups_total", "Verification cache lookups by cache and result.", ["cache", "result"])

PASSWORD_THROTTLED = Counter("authz_password_throttled_total",
                             "Password checks refused before the KDF, by spent budget (user, address, busy).",
                             ["budget"])

DECISION_LOG_DROPPED = Counter("authz_decision_log_dropped_total",
                               "Decision log lines that could not be written (full disk, unwritable file).")

WEBHOOK_DELIVERIES = Counter("authz_webhook_deliveries_total",
                             "Webhook delivery attempts by result (delivered, retrying, given_up).", ["result"])

# Counted by the one process whose insert stored the anomaly (the store dedupes), so the
# sum over workers and replicas is the number of anomalies. Kinds: authz.webhooks.anomalies.
ANOMALIES = Counter("authz_api_key_anomalies_total", "API key anomalies raised, by kind.", ["kind"])

_children: dict[tuple, object] = {}
FLUSH_SECONDS = 0.25


class _Tally:
    """This process's counts since the last flush (see the module's docstring)."""

    def __init__(self) -> None:
        # prometheus_client keeps a histogram's per-bucket (not cumulative) values and its
        # sum as ``_buckets`` / ``_sum``; observe() adds 1 to the first bucket whose bound
        # is >= the value. Without them (another version), durations are observed directly.
        self.bounds = list(getattr(DURATION, "_upper_bounds", ()))
        self.batched_durations = len(getattr(DURATION, "_buckets", ())) == len(self.bounds) > 0 and hasattr(
            DURATION, "_sum")
        self._reset()
        self.thread = ProcessThread("authz-metrics", self.flush, FLUSH_SECONDS,
                                    prepare=lambda: at_exit(self.flush), after_fork=self._reset)

    def _reset(self) -> None:
        """Also in a forked child: the parent's counts are the parent's to write."""
        self.lock = threading.Lock()
        self.counts: dict = {}
        self.buckets = [0] * len(self.bounds)
        self.total = 0.0

    def count(self, child) -> None:
        with self.lock:
            self.counts[child] = self.counts.get(child, 0) + 1
        if not self.thread.started:
            self.thread.ensure_started()

    def duration(self, seconds: float) -> None:
        if not self.batched_durations:
            DURATION.observe(seconds)
            return
        index = bisect_left(self.bounds, seconds)
        with self.lock:
            self.buckets[index] += 1
            self.total += seconds

    def flush(self) -> None:
        with self.lock:
            counts, self.counts = self.counts, {}
            buckets, self.buckets = self.buckets, [0] * len(self.bounds)
            total, self.total = self.total, 0.0
        for child, amount in counts.items():
            child.inc(amount)
        if any(buckets):
            for value, amount in zip(DURATION._buckets, buckets, strict=True):
                if amount:
                    value.inc(amount)
            DURATION._sum.inc(total)


_TALLY = _Tally()


def _child(metric, *labels):
    """Label lookups cost more than the increment: keep the children."""
    key = (metric._name, *labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


def decision(route: str | None, allowed: bool, reason: str | None, seconds: float) -> None:
    _TALLY.count(_child(DECISIONS, route or "", "allow" if allowed else "deny", reason or ""))
    _TALLY.duration(seconds)


def outcome(authenticator: str, kind: str, result: str) -> None:
    _TALLY.count(_child(OUTCOMES, authenticator, kind, result))


def cache(name: str, hit: bool) -> None:
    _TALLY.count(_child(CACHE, name, "hit" if hit else "miss"))


def policy_revision(new: str, old: str | None = None) -> None:
    if old and old != new:
        POLICY.labels(old).set(0)
    POLICY.labels(new).set(1)


def password_throttled(budget: str) -> None:
    _child(PASSWORD_THROTTLED, budget).inc()


def decision_log_dropped(count: int) -> None:
    DECISION_LOG_DROPPED.inc(count)


def reload_result(result: str) -> None:
    _child(RELOADS, result).inc()


def webhook_delivery(result: str) -> None:
    _child(WEBHOOK_DELIVERIES, result).inc()


def anomaly(kind: str) -> None:
    _TALLY.count(_child(ANOMALIES, kind))


def anomaly_kinds(kinds: tuple[str, ...]) -> None:
    """Expose every kind at 0 before the first anomaly: ``increase()`` in an alert rule
    needs the series to exist before it grows."""
    for kind in kinds:
        _child(ANOMALIES, kind)


def flush() -> None:
    """Write this process's pending counts now (``/metrics`` does, and tests)."""
    _TALLY.flush()


def exposition(*collectors: Collector) -> tuple[bytes, str]:
    """Every worker's metrics, and what ``collectors`` read now, in this process (values
    that are the store's, not a worker's: ``authz.observability.store_metrics``)."""
    flush()
    extra = CollectorRegistry()
    for collector in collectors:
        extra.register(collector)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # prometheus_client's own variable, not a Settings field
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry) + generate_latest(extra), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY) + generate_latest(extra), CONTENT_TYPE_LATEST
