"""Snapshots of good policy revisions in SQLite: every file, base64 in one JSON column."""

from __future__ import annotations

import base64
import json
import time

from authz.store.interface import CHANGE_POLICY_SNAPSHOT
from authz.store.records import PolicySnapshot
from authz.store.sqlite.database import Database, append_change


class SqlitePolicySnapshots:
    def __init__(self, database: Database) -> None:
        self.database = database

    def save(self, revision: str, directory: str, files: dict[str, bytes], keep: int) -> None:
        encoded = json.dumps({name: base64.b64encode(data).decode() for name, data in files.items()})
        with self.database.write() as db:
            # A revision served again (a revert) becomes the newest: "latest" means the
            # revision most recently proven good, which a respawned worker must serve.
            db.execute("INSERT INTO policy_snapshots (revision, directory, files, created_at) "
                       "VALUES (?, ?, ?, ?) ON CONFLICT (revision) DO UPDATE SET "
                       "directory = excluded.directory, created_at = excluded.created_at",
                       (revision, directory, encoded, time.time()))
            db.execute("DELETE FROM policy_snapshots WHERE revision NOT IN (SELECT revision FROM policy_snapshots "
                       "ORDER BY created_at DESC LIMIT ?)", (keep,))
            append_change(db, CHANGE_POLICY_SNAPSHOT, directory)

    def latest_revision(self, directory: str) -> str | None:
        row = self.database.execute("SELECT revision FROM policy_snapshots WHERE directory = ? "
                                    "ORDER BY created_at DESC LIMIT 1", (directory,)).fetchone()
        return None if row is None else row[0]

    def latest(self, directory: str) -> PolicySnapshot | None:
        row = self.database.execute("SELECT revision, files FROM policy_snapshots WHERE directory = ? "
                                    "ORDER BY created_at DESC LIMIT 1", (directory,)).fetchone()
        if row is None:
            return None
        return PolicySnapshot(row[0], {name: base64.b64decode(data) for name, data in json.loads(row[1]).items()})
