"""Rows to records, shared by the backends: their SELECTs name the same columns in the
same order, so one function per shape turns a row of either into its record."""

from __future__ import annotations

from authz.store.records import ApiKeyMatch, ApiKeyRecord

# The SELECTs the two shapes below read, standard SQL for every backend (each appends
# its condition, with its own placeholder).
FIND_API_KEY = (
    "SELECT k.id, k.env, k.scopes, k.allow_ips, k.status, k.expires_at, "
    "p.name, p.kind, p.disabled, p.roles, k.hash, k.publishable, k.origins "
    "FROM api_keys k JOIN principals p ON p.id = k.principal_id WHERE "
)
LIST_API_KEYS = (
    "SELECT k.id, p.name, p.kind, k.display, k.env, k.status, k.scopes, k.allow_ips, "
    "k.created_at, k.expires_at, k.revoked_at, k.last_used_at, k.rotated_from, "
    "k.replaced_by, p.disabled, k.publishable, k.origins FROM api_keys k JOIN principals p ON p.id = k.principal_id "
)


def api_key_match(row) -> ApiKeyMatch | None:
    if row is None:
        return None
    return ApiKeyMatch(row[0], row[1], frozenset(row[2].split()), row[3], row[4], row[5],
                       row[6], row[7], bool(row[8]), frozenset(row[9].split()), row[10], bool(row[11]), row[12])


def api_key_record(row) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row[0], principal=row[1], principal_kind=row[2], display=row[3], env=row[4], status=row[5],
        scopes=tuple(row[6].split()), allow_ips=tuple(row[7].split()), created_at=row[8], expires_at=row[9],
        revoked_at=row[10], last_used_at=row[11], rotated_from=row[12], replaced_by=row[13],
        principal_disabled=bool(row[14]), publishable=bool(row[15]), origins=tuple(row[16].split()),
    )
