"""API key anomalies as operators read and clear them (raised by serving processes:
``authz.webhooks.anomalies``).

An anomaly stays listed once acknowledged; acknowledging is what lets a key created
with ``--on-anomaly deny`` be accepted again, and it does not raise the same anomaly
again for its span (its row is kept, so the dedupe holds).
"""

from __future__ import annotations

import time

from authz.store.errors import StoreError
from authz.store.interface import Store
from authz.store.records import KeyAnomaly


class AnomalyAdmin:
    def __init__(self, store: Store) -> None:
        self.store = store

    def since(self, seconds: float, now: float | None = None) -> list[KeyAnomaly]:
        """Anomalies raised in the last ``seconds``, newest first."""
        if seconds <= 0:
            raise StoreError("the span must be positive, e.g. 7d")
        return self.store.anomalies.since((time.time() if now is None else now) - seconds)

    def ack(self, anomaly_id: str) -> KeyAnomaly:
        """Acknowledge an anomaly (the key's ``--on-anomaly deny`` lets it through again)."""
        found = self.store.anomalies.get(anomaly_id)
        if found is None:
            raise StoreError(f"no anomaly with id {anomaly_id!r} (see `authz keys anomalies`)")
        if found.acked_at is not None or not self.store.anomalies.ack(anomaly_id, time.time()):
            raise StoreError(f"anomaly {anomaly_id} was acknowledged already")
        acked = self.store.anomalies.get(anomaly_id)
        assert acked is not None
        return acked
