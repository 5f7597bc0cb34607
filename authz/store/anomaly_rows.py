"""API key anomalies in SQL, shared by the backends (``?`` placeholders, as in
``authz.store.usage_rows``).

``key_anomalies (id)``: the id is derived from (key, kind, span), so that inserting
the same anomaly again, from another worker or replica or a later batch, is a conflict
that writes nothing: the store keeps it to one row, and only the process whose insert
wrote the row counts, logs and announces it. Rows are few (one per key, kind and span
at most) and kept: an acknowledged anomaly stays listed, and stays raised for its span.
"""

from __future__ import annotations

import hashlib

from authz.store.records import KeyAnomaly

INSERT = ("INSERT INTO key_anomalies (id, key_id, kind, span, at, detail) VALUES (?, ?, ?, ?, ?, ?) "
          "ON CONFLICT (id) DO NOTHING")
_SELECT = "SELECT id, key_id, kind, span, at, detail, acked_at FROM key_anomalies "
SINCE = _SELECT + "WHERE at >= ? ORDER BY at DESC, id"
GET = _SELECT + "WHERE id = ?"
OPEN = _SELECT + "WHERE key_id = ? AND acked_at IS NULL ORDER BY at, id"
ACK = "UPDATE key_anomalies SET acked_at = ? WHERE id = ? AND acked_at IS NULL"
# A key refused on anomaly is served differently once one is raised or acknowledged: its
# fingerprint goes into the change log (replicas re-read the key), in the same transaction.
DENYING_KEY = "SELECT hash FROM api_keys WHERE id = ? AND on_anomaly = 'deny'"
KEY_OF = "SELECT key_id FROM key_anomalies WHERE id = ?"


def anomaly_id(key_id: str, kind: str, span: str) -> str:
    """The one id of this key's anomaly of ``kind`` in ``span`` (the unit separator keeps parts apart)."""
    return "an_" + hashlib.sha256("\x1f".join((key_id, kind, span)).encode()).hexdigest()[:16]


def row(anomaly: KeyAnomaly) -> tuple:
    return (anomaly.id, anomaly.key_id, anomaly.kind, anomaly.span, anomaly.at, anomaly.detail)


def anomaly(found) -> KeyAnomaly | None:
    return None if found is None else KeyAnomaly(*found)
