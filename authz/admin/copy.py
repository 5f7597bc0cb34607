"""``authz db copy``: move a whole store between backends (SQLite ⇄ PostgreSQL), verified.

Every table of ``authz.store.tables.TABLES`` (principals, keys, revocations,
certificates, signing keys, policy snapshots, key usage) is copied row for row into a target that
has the schema and nothing else, then both sides are counted and checksummed (SHA-256
over every row in primary-key order): a copy that differs in one value is an error. The
change log is not copied: replicas of the target start from its state.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass

from authz.store.errors import StoreError
from authz.store.interface import Store
from authz.store.tables import TABLES


@dataclass(frozen=True)
class CopyResult:
    counts: dict[str, int]
    checksum: str
    seconds: float

    def to_json(self) -> dict:
        return {"tables": self.counts, "checksum": self.checksum, "seconds": round(self.seconds, 3)}


def fingerprint(store: Store) -> tuple[dict[str, int], str]:
    """Row counts per table and one checksum of every row of every table."""
    digest = hashlib.sha256()
    counts = {}
    for table in TABLES:
        rows = store.dump(table)
        counts[table] = len(rows)
        digest.update(f"{table}\n".encode())
        for row in rows:
            digest.update(json.dumps(row, separators=(",", ":")).encode() + b"\n")
    return counts, digest.hexdigest()


def copy_store(source: Store, target: Store) -> CopyResult:
    """Copy ``source`` (at the current schema) into ``target`` (created or migrated here,
    refused unless empty); verified by counts and checksum."""
    started = time.monotonic()
    source.check_ready()
    target.migrate()
    occupied = [table for table in TABLES if target.dump(table)]
    if occupied:
        raise StoreError(f"{target.location} is not empty ({', '.join(occupied)}): copy into a new store "
                         "(one `authz db init` has not run on)")
    for table in TABLES:
        target.load(table, source.dump(table))
    counts, checksum = fingerprint(source)
    copied_counts, copied_checksum = fingerprint(target)
    if (counts, checksum) != (copied_counts, copied_checksum):
        raise StoreError(f"the copy in {target.location} differs from {source.location}: "
                         f"counts {copied_counts} against {counts}")
    return CopyResult(counts, checksum, time.monotonic() - started)
