"""Snapshots of good policy revisions in PostgreSQL: every file, base64 in one JSON text."""

from __future__ import annotations

import base64
import json
import time

from authz.store.interface import CHANGE_POLICY_SNAPSHOT
from authz.store.postgres.database import Database
from authz.store.records import PolicySnapshot

_NEWEST = " FROM policy_snapshots WHERE directory = %s ORDER BY created_at DESC LIMIT 1"


class PostgresPolicySnapshots:
    def __init__(self, database: Database) -> None:
        self.database = database

    def save(self, revision: str, directory: str, files: dict[str, bytes], keep: int) -> None:
        encoded = json.dumps({name: base64.b64encode(data).decode() for name, data in files.items()})
        with self.database.write() as tx:
            # A revision served again (a revert) becomes the newest, as in SQLite.
            tx.execute("INSERT INTO policy_snapshots (revision, directory, files, created_at) "
                       "VALUES (%s, %s, %s, %s) ON CONFLICT (revision) DO UPDATE SET "
                       "directory = excluded.directory, created_at = excluded.created_at",
                       (revision, directory, encoded, time.time()))
            tx.execute("DELETE FROM policy_snapshots WHERE revision NOT IN (SELECT revision FROM policy_snapshots "
                       "ORDER BY created_at DESC LIMIT %s)", (keep,))
            tx.change(CHANGE_POLICY_SNAPSHOT, directory)

    def latest_revision(self, directory: str) -> str | None:
        row = self.database.one("SELECT revision" + _NEWEST, (directory,))
        return None if row is None else row[0]

    def latest(self, directory: str) -> PolicySnapshot | None:
        row = self.database.one("SELECT revision, files" + _NEWEST, (directory,))
        if row is None:
            return None
        return PolicySnapshot(row[0], {name: base64.b64decode(data) for name, data in json.loads(row[1]).items()})
