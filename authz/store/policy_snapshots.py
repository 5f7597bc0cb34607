"""Snapshots of good policy revisions: every file the revision was built from."""

from __future__ import annotations

import base64
import json
import time

from authz.store.database import Database

KEEP = 20


class PolicySnapshots:
    def __init__(self, database: Database) -> None:
        self.database = database

    def save(self, revision: str, directory: str, contents: dict[str, bytes]) -> None:
        files = json.dumps({name: base64.b64encode(data).decode() for name, data in contents.items()})
        with self.database.write() as db:
            db.execute("INSERT OR IGNORE INTO policy_snapshots (revision, directory, files, created_at) "
                       "VALUES (?, ?, ?, ?)", (revision, directory, files, time.time()))
            db.execute("DELETE FROM policy_snapshots WHERE revision NOT IN (SELECT revision FROM policy_snapshots "
                       "ORDER BY created_at DESC LIMIT ?)", (KEEP,))

    def latest(self, directory: str) -> tuple[str, dict[str, bytes]] | None:
        row = self.database.execute("SELECT revision, files FROM policy_snapshots WHERE directory = ? "
                                    "ORDER BY created_at DESC LIMIT 1", (directory,)).fetchone()
        if row is None:
            return None
        return row[0], {name: base64.b64decode(data) for name, data in json.loads(row[1]).items()}
