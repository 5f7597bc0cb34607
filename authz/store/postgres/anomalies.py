"""API key anomalies in PostgreSQL (the statements are shared: ``authz.store.anomaly_rows``).

Written without the change-log lock, like usage, unless the key is refused on anomaly
(``--on-anomaly deny``): then the write appends its fingerprint to the change log, so
that replicas re-read the key. Which it is, is read just before."""

from __future__ import annotations

from authz.store import anomaly_rows
from authz.store.interface import CHANGE_API_KEY
from authz.store.postgres.database import Database
from authz.store.records import KeyAnomaly
from authz.store.usage_rows import placed

_P = "%s"


class PostgresKeyAnomalies:
    def __init__(self, database: Database) -> None:
        self.database = database

    def _denying(self, key_id: str | None) -> str | None:
        """The fingerprint of this key if it is refused on anomaly, else None."""
        row = None if key_id is None else self.database.one(placed(anomaly_rows.DENYING_KEY, _P), (key_id,))
        return None if row is None else row[0]

    def add(self, anomaly: KeyAnomaly) -> bool:
        fingerprint = self._denying(anomaly.key_id)
        with self.database.write(changes=fingerprint is not None) as tx:
            if tx.execute(placed(anomaly_rows.INSERT, _P), anomaly_rows.row(anomaly)).rowcount != 1:
                return False
            if fingerprint is not None:
                tx.change(CHANGE_API_KEY, fingerprint)
        return True

    def get(self, anomaly_id: str) -> KeyAnomaly | None:
        return anomaly_rows.anomaly(self.database.one(placed(anomaly_rows.GET, _P), (anomaly_id,)))

    def since(self, at: float) -> list[KeyAnomaly]:
        return [anomaly_rows.anomaly(found)  # type: ignore[misc]
                for found in self.database.query(placed(anomaly_rows.SINCE, _P), (at,))]

    def open(self, key_id: str) -> list[KeyAnomaly]:
        return [anomaly_rows.anomaly(found)  # type: ignore[misc]
                for found in self.database.query(placed(anomaly_rows.OPEN, _P), (key_id,))]

    def ack(self, anomaly_id: str, at: float) -> bool:
        found = self.get(anomaly_id)
        fingerprint = self._denying(found.key_id if found is not None else None)
        with self.database.write(changes=fingerprint is not None) as tx:
            if tx.execute(placed(anomaly_rows.ACK, _P), (at, anomaly_id)).rowcount != 1:
                return False
            if fingerprint is not None:
                tx.change(CHANGE_API_KEY, fingerprint)
        return True
