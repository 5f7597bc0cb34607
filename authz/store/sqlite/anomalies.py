"""API key anomalies in SQLite (the statements are shared: ``authz.store.anomaly_rows``)."""

from __future__ import annotations

from authz.store import anomaly_rows
from authz.store.interface import CHANGE_API_KEY
from authz.store.records import KeyAnomaly
from authz.store.sqlite.database import Database, append_change


class SqliteKeyAnomalies:
    def __init__(self, database: Database) -> None:
        self.database = database

    def add(self, anomaly: KeyAnomaly) -> bool:
        with self.database.write() as db:
            if db.conn.execute(anomaly_rows.INSERT, anomaly_rows.row(anomaly)).rowcount != 1:
                return False
            _changed(db, anomaly.key_id)
        return True

    def get(self, anomaly_id: str) -> KeyAnomaly | None:
        return anomaly_rows.anomaly(self.database.execute(anomaly_rows.GET, (anomaly_id,)).fetchone())

    def since(self, at: float) -> list[KeyAnomaly]:
        return [anomaly_rows.anomaly(found) for found in  # type: ignore[misc]
                self.database.execute(anomaly_rows.SINCE, (at,)).fetchall()]

    def open(self, key_id: str) -> list[KeyAnomaly]:
        return [anomaly_rows.anomaly(found) for found in  # type: ignore[misc]
                self.database.execute(anomaly_rows.OPEN, (key_id,)).fetchall()]

    def ack(self, anomaly_id: str, at: float) -> bool:
        with self.database.write() as db:
            if db.conn.execute(anomaly_rows.ACK, (at, anomaly_id)).rowcount != 1:
                return False
            _changed(db, db.conn.execute(anomaly_rows.KEY_OF, (anomaly_id,)).fetchone()[0])
        return True


def _changed(db, key_id: str) -> None:
    """A key refused on anomaly changed how it is served: into the change log."""
    row = db.conn.execute(anomaly_rows.DENYING_KEY, (key_id,)).fetchone()
    if row is not None:
        append_change(db, CHANGE_API_KEY, row[0])
