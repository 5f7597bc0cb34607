"""API key usage in SQL, shared by the backends: the statements are standard SQL (an
upsert is ``INSERT … ON CONFLICT … DO UPDATE`` in SQLite and PostgreSQL alike, and
``CASE`` stands in for ``MAX``/``GREATEST``), written with ``?`` placeholders; each
backend passes its own placeholder and its transaction's ``execute``/``executemany``.

Three tables, each read by one primary-key range (what ``authz keys usage`` and,
later, anomaly detection ask):

- ``key_usage_hours (key_id, hour)``: allowed and denied requests per hour;
- ``key_networks (key_id, network)``: the client networks (IPv4 /24, IPv6 /48) a key
  was presented from, with the first and last sighting;
- ``key_last_requests (key_id)``: the latest request (time, verdict, client address,
  route) and how many requests came while the key was deprecated (since its rotation).

No foreign key to ``api_keys``: keys are never deleted, and a batch naming a key the
store does not hold (a store replaced under a running server) must not fail the
whole batch; such rows age out with the retention like any other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from authz.store.records import KeyNetwork, KeyUsage, LastRequest, UsageHour

HOUR = 3600
# A publishable key in a public web page is presented from every visitor's network: keep
# the first MAX_NETWORKS per key (checked once per key and batch, so a batch may pass it
# by its own networks), and go on raising the last sighting of those.
MAX_NETWORKS = 1000
_CHUNK = 500  # keys per IN (…) list

_ADD_HOURS = (
    "INSERT INTO key_usage_hours (key_id, hour, allowed, denied) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (key_id, hour) DO UPDATE SET allowed = key_usage_hours.allowed + excluded.allowed, "
    "denied = key_usage_hours.denied + excluded.denied"
)
_COUNT_NETWORKS = "SELECT key_id, COUNT(*) FROM key_networks WHERE key_id IN ({}) GROUP BY key_id"
_ADD_NETWORKS = (
    "INSERT INTO key_networks (key_id, network, first_seen, last_seen) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (key_id, network) DO UPDATE SET "
    "first_seen = CASE WHEN excluded.first_seen < key_networks.first_seen "
    "THEN excluded.first_seen ELSE key_networks.first_seen END, "
    "last_seen = CASE WHEN excluded.last_seen > key_networks.last_seen "
    "THEN excluded.last_seen ELSE key_networks.last_seen END"
)
_SEEN_AGAIN = (
    "UPDATE key_networks SET last_seen = CASE WHEN ? > last_seen THEN ? ELSE last_seen END "
    "WHERE key_id = ? AND network = ?"
)
_NEWER = "excluded.at >= key_last_requests.at"
_ADD_LAST = (
    "INSERT INTO key_last_requests (key_id, at, allowed, client_ip, route, after_rotation) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key_id) DO UPDATE SET "
    "after_rotation = key_last_requests.after_rotation + excluded.after_rotation, "
    + ", ".join(f"{column} = CASE WHEN {_NEWER} THEN excluded.{column} ELSE key_last_requests.{column} END"
                for column in ("at", "allowed", "client_ip", "route"))
)
HOURS = "SELECT hour, allowed, denied FROM key_usage_hours WHERE key_id = ? AND hour >= ? ORDER BY hour"
NETWORKS = ("SELECT network, first_seen, last_seen FROM key_networks WHERE key_id = ? "
            "ORDER BY first_seen, network")
_LAST = "SELECT key_id, at, allowed, client_ip, route, after_rotation FROM key_last_requests"
LAST_REQUEST = _LAST + " WHERE key_id = ?"
LAST_REQUESTS = _LAST + " ORDER BY key_id"
PRUNE = ("DELETE FROM key_usage_hours WHERE hour < ?", "DELETE FROM key_networks WHERE last_seen < ?",
         "DELETE FROM key_last_requests WHERE at < ?")


def placed(sql: str, placeholder: str) -> str:
    """``sql`` with the backend's placeholder (no statement here holds a literal ``?``)."""
    return sql if placeholder == "?" else sql.replace("?", placeholder)


def write(execute: Callable[[str, Sequence], object], executemany: Callable[[str, list], object],
          usage: list[KeyUsage], placeholder: str) -> None:
    """Add ``usage`` inside the caller's transaction. Rows are written in key order, so
    that two processes writing overlapping batches lock them in one order (PostgreSQL)."""
    usage = sorted(usage, key=lambda u: u.key_id)
    executemany(placed(_ADD_HOURS, placeholder),
                [(u.key_id, hour, allowed, denied) for u in usage for hour, allowed, denied in sorted(u.hours)])
    stored = _network_counts(execute, [u.key_id for u in usage if u.networks], placeholder)
    new, again = [], []
    for u in usage:
        rows = [(u.key_id, network, first, last) for network, first, last in sorted(u.networks)]
        if stored.get(u.key_id, 0) < MAX_NETWORKS:
            new += rows
        else:
            again += [(last, last, key_id, network) for key_id, network, _, last in rows]
    if new:
        executemany(placed(_ADD_NETWORKS, placeholder), new)
    if again:
        executemany(placed(_SEEN_AGAIN, placeholder), again)
    executemany(placed(_ADD_LAST, placeholder),
                [(u.key_id, u.last_at, int(u.last_allowed), u.last_client_ip, u.last_route, u.after_rotation)
                 for u in usage])


def _network_counts(execute, key_ids: list[str], placeholder: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for start in range(0, len(key_ids), _CHUNK):
        chunk = key_ids[start:start + _CHUNK]
        sql = placed(_COUNT_NETWORKS.format(", ".join("?" * len(chunk))), placeholder)
        counts.update(execute(sql, chunk).fetchall())  # type: ignore[attr-defined]
    return counts


def hour_start(at: float) -> int:
    """The start of the hour ``at`` falls in (seconds since the epoch)."""
    return int(at // HOUR) * HOUR


def usage_hour(row) -> UsageHour:
    return UsageHour(int(row[0]), int(row[1]), int(row[2]))


def key_network(row) -> KeyNetwork:
    return KeyNetwork(row[0], row[1], row[2])


def last_request(row) -> LastRequest | None:
    if row is None:
        return None
    return LastRequest(row[0], row[1], bool(row[2]), row[3], row[4], int(row[5]))
