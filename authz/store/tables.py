"""The tables every backend holds, their columns in one order: what ``authz db copy``
moves between backends (``Store.dump`` / ``Store.load``) and checksums. The change log
and the schema version are not data: a copy starts its own."""

from __future__ import annotations

# name -> (columns, ORDER BY that makes a dump deterministic). Parents before children.
TABLES: dict[str, tuple[tuple[str, ...], str]] = {
    "principals": (("id", "name", "kind", "scopes", "roles", "password_hash", "disabled", "created_at",
                    "updated_at"), "id"),
    "api_keys": (("id", "principal_id", "hash", "display", "env", "scopes", "allow_ips", "status", "created_at",
                  "expires_at", "revoked_at", "last_used_at", "rotated_from", "replaced_by", "publishable", "origins",
                  "on_anomaly", "signing_alg", "signing_key"),
                 "id"),
    "revocations": (("kind", "issuer", "value", "expires_at", "created_at"), "kind, issuer, value"),
    "certificates": (("fingerprint", "principal_id", "subject", "not_after", "created_at"), "fingerprint"),
    "signing_keys": (("kid", "algorithm", "private_pem", "public_jwk", "created_at", "retired_at", "publish_until"),
                     "kid"),
    "policy_snapshots": (("revision", "directory", "files", "created_at"), "revision"),
    # API key usage (authz.store.usage_rows): a copy keeps the history an operator reads.
    "key_usage_hours": (("key_id", "hour", "allowed", "denied"), "key_id, hour"),
    "key_networks": (("key_id", "network", "first_seen", "last_seen"), "key_id, network"),
    "key_last_requests": (("key_id", "at", "allowed", "client_ip", "route", "after_rotation"), "key_id"),
    # Events not yet delivered move with the store, and so does how far the expiry scan
    # has looked (a copy neither loses a warning nor sends one again).
    "webhook_outbox": (("id", "type", "body", "state", "created_at", "attempts", "next_attempt_at", "lease_until",
                        "claim", "finished_at", "last_error"), "id"),
    "webhook_cursors": (("name", "at"), "name"),
    # Anomalies, acknowledged or not: a copy neither raises one again nor forgets an ack.
    "key_anomalies": (("id", "key_id", "kind", "span", "at", "detail", "acked_at"), "id"),
}


def select_all(table: str) -> str:
    """The dump query of ``table`` (names from ``TABLES`` only, never from input)."""
    columns, order = TABLES[table]
    return f"SELECT {', '.join(columns)} FROM {table} ORDER BY {order}"  # noqa: S608 — names from TABLES


def insert_into(table: str, placeholder: str) -> str:
    columns, _ = TABLES[table]
    return (f"INSERT INTO {table} ({', '.join(columns)}) "  # noqa: S608 — names from TABLES
            f"VALUES ({', '.join([placeholder] * len(columns))})")
