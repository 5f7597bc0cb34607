"""Prometheus metrics, correct under several gunicorn workers.

With ``PROMETHEUS_MULTIPROC_DIR`` set (``make run`` and the deploy configs set it; it
must exist and be emptied before the server starts), every worker writes its samples
there and ``/metrics`` adds them up (prometheus-client's multiprocess mode); without
it, each process reports its own.
"""

from __future__ import annotations

import os

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

_children: dict[tuple, object] = {}


def _child(metric, *labels):
    """Label lookups cost more than the increment: keep the children."""
    key = (metric._name, *labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


def decision(route: str | None, allowed: bool, reason: str | None, seconds: float) -> None:
    _child(DECISIONS, route or "", "allow" if allowed else "deny", reason or "").inc()
    DURATION.observe(seconds)


def outcome(authenticator: str, kind: str, result: str) -> None:
    _child(OUTCOMES, authenticator, kind, result).inc()


def cache(name: str, hit: bool) -> None:
    _child(CACHE, name, "hit" if hit else "miss").inc()


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


def exposition() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # prometheus_client's own variable, not a Settings field
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
