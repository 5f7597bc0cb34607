"""Sending the outbox to the operator's webhook: at least once, signed, retried.

A deliverer leases due events (``WebhookOutbox.claim``: one deliverer per event, however
many workers and replicas poll), POSTs each, signed (``authz.credentials.webhook_signature``), and
settles it: a 2xx answer marks it delivered; anything else — another status, a
redirect (never followed), a timeout, a refused connection — schedules a retry after
``first_retry`` seconds, twice as long each time (up to ``MAX_RETRY_DELAY``, ±10 %
jitter so that retries after an outage do not arrive together), and after
``GIVE_UP_AFTER`` the event is given up (``failed``, logged, counted). A deliverer
killed mid-send leaves its lease to run out: the event is sent again (at least once —
receivers deduplicate by ``webhook-id``).

Bounded: a total deadline per request (``TIMEOUT``, connect to last byte,
``authz.authenticators.http_client``), answers read up to ``MAX_REPLY_BYTES`` and never
kept, at most ``BATCH`` events per lease. Only https, or http to a loopback host; the
URL is shown without its credentials or query in logs and stored errors.
"""

from __future__ import annotations

import logging
import random
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from authz.authenticators.http_client import FetchError, fetch
from authz.credentials.webhook_signature import headers
from authz.observability import metrics
from authz.store.interface import WebhookOutbox
from authz.store.records import WebhookEvent

log = logging.getLogger("authz.webhooks")
TIMEOUT = 10.0
MAX_REPLY_BYTES = 64 * 1024
BATCH = 20
MAX_RETRY_DELAY = 6 * 3600.0
GIVE_UP_AFTER = 3 * 86400.0  # Standard Webhooks' example schedule spans three days
LEASE_SLACK = 30.0


def shown(url: str) -> str:
    """The URL as logs show it: no user, password or query (they may hold a token)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return urlunsplit((parts.scheme, host + (f":{parts.port}" if parts.port else ""), parts.path, "", ""))


def retry_delay(attempts: int, first: float) -> float:
    """Seconds before the next attempt, after ``attempts`` failed ones."""
    return min(first * 2 ** min(attempts - 1, 40), MAX_RETRY_DELAY) * random.uniform(0.9, 1.1)


@dataclass
class DeliveryReport:
    delivered: int = 0
    retrying: int = 0
    given_up: int = 0

    def to_json(self) -> dict:
        return {"delivered": self.delivered, "retrying": self.retrying, "given_up": self.given_up}


class Deliverer:
    """Delivers one outbox to one URL (``AUTHZ_WEBHOOK_URL``) with one key."""

    def __init__(self, outbox: WebhookOutbox, url: str, key: bytes, first_retry: float,
                 timeout: float = TIMEOUT) -> None:
        self.outbox = outbox
        self.url = url
        self.key = key
        self.first_retry = first_retry
        self.timeout = timeout
        self.failing = False  # an episode of failures is logged when it begins and ends

    def deliver_due(self, max_batches: int = 10, now: float | None = None) -> DeliveryReport:
        """Send what is due, ``BATCH`` events a lease, at most ``max_batches`` leases: what
        was due when the call began, so each event is tried at most once a call."""
        report = DeliveryReport()
        moment = time.time() if now is None else now
        for _ in range(max_batches):
            if not self.outbox.has_due(moment):
                break
            token = secrets.token_hex(8)
            claimed = self.outbox.claim(moment, moment + BATCH * (self.timeout + 1) + LEASE_SLACK, token, BATCH)
            if not claimed:
                break  # another deliverer took them
            for event in claimed:
                self._attempt(event, token, report)
        return report

    def _attempt(self, event: WebhookEvent, token: str, report: DeliveryReport) -> None:
        error = self.send(event)
        now = time.time()
        if error is None:
            settled, result = self.outbox.delivered(event.id, token, now), "delivered"
            report.delivered += 1
            if self.failing:
                self.failing = False
                log.warning("webhook %s answers again", shown(self.url))
        elif now - event.created_at >= GIVE_UP_AFTER:
            settled, result = self.outbox.failed(event.id, token, now, error, None), "given_up"
            report.given_up += 1
            log.error("webhook event %s (%s) given up after %d attempts over %.0f h: %s", event.id, event.type,
                      event.attempts + 1, (now - event.created_at) / 3600, error)
        else:
            retry_at = now + retry_delay(event.attempts + 1, self.first_retry)
            settled, result = self.outbox.failed(event.id, token, now, error, retry_at), "retrying"
            report.retrying += 1
            if not self.failing:
                self.failing = True
                log.warning("webhook %s failed: %s; events are kept and retried (first after %g s, doubling)",
                            shown(self.url), error, self.first_retry)
        if not settled:  # the lease ran out and another deliverer holds the event: it settles it
            log.info("webhook event %s: lease lost during delivery", event.id)
        metrics.webhook_delivery(result)

    def send(self, event: WebhookEvent) -> str | None:
        """One attempt; the reason it failed, or None."""
        body = event.body.encode()
        try:
            reply = fetch(self.url, data=body, headers=headers(self.key, event.id, int(time.time()), body),
                          timeout=self.timeout, max_bytes=MAX_REPLY_BYTES)
        except FetchError as exc:
            return str(exc).replace(self.url, shown(self.url))[:300]
        if 200 <= reply.status < 300:
            return None
        return f"HTTP {reply.status}"
