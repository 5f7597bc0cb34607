"""Who scans and delivers: a background thread in every serving process, or a cron job.

**In the server** (when ``AUTHZ_WEBHOOK_URL`` is set): each process that serves runs a
``ProcessThread`` that, every ``AUTHZ_WEBHOOK_INTERVAL`` seconds, scans for expiry
events (``authz.webhooks.expiry``) and delivers what is due (``authz.webhooks.delivery``).
That is the default because it needs nothing else deployed and retries within seconds,
and because anomalies are noticed by the serving workers themselves. Running it in every
worker of every replica is safe, not wasteful: the scan cursor lets one process look at
each span, claims let one process send each event, and an idle poll is one indexed
read. Under gunicorn with ``preload_app`` the thread runs in the master (the app is
created there once), under granian in each worker.

**From cron** (``authz webhooks deliver``): the same work once, for deployments whose
servers may not call out (give the URL and secret to the cron job only: events are
still enqueued by whoever notices them, and the cron job delivers them).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass

from authz.background import ProcessThread
from authz.config import Settings
from authz.credentials.webhook_signature import parse_secret
from authz.store.errors import StoreUnavailable
from authz.store.interface import Store
from authz.webhooks import expiry
from authz.webhooks.delivery import GIVE_UP_AFTER, Deliverer, DeliveryReport

log = logging.getLogger("authz.webhooks")
KEEP_FINISHED = 7 * 86400.0  # delivered and given-up events stay listed this long
PRUNE_EVERY = 3600.0


@dataclass
class RunReport:
    enqueued: int
    delivery: DeliveryReport

    def to_json(self) -> dict:
        return {"enqueued": self.enqueued, **self.delivery.to_json()}


class WebhookRunner:
    """The scan and the deliverer over one store, for one URL."""

    def __init__(self, store: Store, url: str, key: bytes, interval: float) -> None:
        self.store = store
        self.interval = interval
        self.deliverer = Deliverer(store.outbox, url, key, first_retry=interval)
        self._next_prune = 0.0
        self.thread = ProcessThread("authz-webhooks", self._tick, interval,
                                    error="webhooks: scanning or delivering failed", logger=log)

    @classmethod
    def from_settings(cls, settings: Settings, store: Store) -> WebhookRunner | None:
        """The runner ``settings`` ask for; None when no webhook is configured."""
        if settings.webhook_url is None or settings.webhook_secret is None:
            return None
        return cls(store, settings.webhook_url, parse_secret(settings.webhook_secret), settings.webhook_interval)

    def start(self) -> None:
        """Run every ``interval`` seconds in a thread of this process (once per process)."""
        self.thread.ensure_started()

    def _tick(self) -> None:
        # The store logs its own fault once per episode; the next tick tries again.
        with contextlib.suppress(StoreUnavailable):
            self.run_once()

    def run_once(self, max_batches: int = 10) -> RunReport:
        """One look: enqueue the expiry events of the span since the last look by anyone,
        then deliver what is due."""
        now = time.time()
        enqueued = expiry.scan(self.store, now, min_span=self.interval / 2) or 0
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_EVERY
            self.store.outbox.prune(now - KEEP_FINISHED, now - GIVE_UP_AFTER - KEEP_FINISHED)
        return RunReport(enqueued, self.deliverer.deliver_due(max_batches))
