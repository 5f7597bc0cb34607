"""Rows to records, shared by the backends: their SELECTs name the same columns in the
same order, so one function per shape turns a row of either into its record."""

from __future__ import annotations

from authz.store.records import ApiKeyMatch, ApiKeyRecord, OutboxCounts, WebhookEvent

# The SELECTs the two shapes below read, standard SQL for every backend (each appends
# its condition, with its own placeholder).
FIND_API_KEY = (
    "SELECT k.id, k.env, k.scopes, k.allow_ips, k.status, k.expires_at, "
    "p.name, p.kind, p.disabled, p.roles, k.hash, k.publishable, k.origins, "
    # A key that opted in to being refused on anomaly: its oldest open one (indexed; a
    # key that did not costs nothing more).
    "CASE WHEN k.on_anomaly = 'deny' THEN (SELECT a.kind || ' ' || a.id FROM key_anomalies a "
    "WHERE a.key_id = k.id AND a.acked_at IS NULL ORDER BY a.at, a.id LIMIT 1) END, "
    "k.signing_alg, k.signing_key "
    "FROM api_keys k JOIN principals p ON p.id = k.principal_id WHERE "
)
LIST_API_KEYS = (
    "SELECT k.id, p.name, p.kind, k.display, k.env, k.status, k.scopes, k.allow_ips, "
    "k.created_at, k.expires_at, k.revoked_at, k.last_used_at, k.rotated_from, "
    "k.replaced_by, p.disabled, k.publishable, k.origins, k.on_anomaly, k.signing_alg "
    "FROM api_keys k JOIN principals p ON p.id = k.principal_id "
)

# Keys that expire in a span, soonest first: each backend appends its two placeholders.
EXPIRING_API_KEYS = LIST_API_KEYS + "WHERE k.status != 'revoked' AND k.expires_at > {0} AND k.expires_at <= {0} " \
                                    "ORDER BY k.expires_at, k.id"
LIST_WEBHOOK_EVENTS = ("SELECT id, type, body, state, created_at, attempts, next_attempt_at, finished_at, last_error "
                       "FROM webhook_outbox ")
COUNT_WEBHOOK_EVENTS = "SELECT state, COUNT(*), MIN(created_at) FROM webhook_outbox GROUP BY state"


def count_expiring_sql(spans: int, placeholder: str) -> str:
    """One range count of active keys for several spans (parameters: each span's end,
    then the start and the longest end): the index on (expires_at, status) alone."""
    parts = ", ".join(f"COALESCE(SUM(CASE WHEN expires_at <= {placeholder} THEN 1 ELSE 0 END), 0)"
                      for _ in range(spans))
    return (f"SELECT {parts} FROM api_keys WHERE status = 'active' "  # noqa: S608 — no input in the text
            f"AND expires_at > {placeholder} AND expires_at <= {placeholder}")


def api_key_match(row) -> ApiKeyMatch | None:
    if row is None:
        return None
    return ApiKeyMatch(row[0], row[1], frozenset(row[2].split()), row[3], row[4], row[5],
                       row[6], row[7], bool(row[8]), frozenset(row[9].split()), row[10], bool(row[11]), row[12],
                       row[13], row[14], row[15])


def api_key_record(row) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row[0], principal=row[1], principal_kind=row[2], display=row[3], env=row[4], status=row[5],
        scopes=tuple(row[6].split()), allow_ips=tuple(row[7].split()), created_at=row[8], expires_at=row[9],
        revoked_at=row[10], last_used_at=row[11], rotated_from=row[12], replaced_by=row[13],
        principal_disabled=bool(row[14]), publishable=bool(row[15]), origins=tuple(row[16].split()),
        on_anomaly=row[17], signing=row[18],
    )


def webhook_event(row) -> WebhookEvent:
    return WebhookEvent(id=row[0], type=row[1], body=row[2], state=row[3], created_at=row[4], attempts=row[5],
                        next_attempt_at=row[6], finished_at=row[7], last_error=row[8])


def outbox_counts(rows) -> OutboxCounts:
    by_state = {row[0]: (row[1], row[2]) for row in rows}
    return OutboxCounts(pending=by_state.get("pending", (0, None))[0],
                        delivered=by_state.get("delivered", (0, None))[0],
                        failed=by_state.get("failed", (0, None))[0],
                        oldest_pending=by_state.get("pending", (0, None))[1])
