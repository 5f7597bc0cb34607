"""SQLite connection handling shared by the store's tables.

One connection per thread and per process (gunicorn forks after import), WAL so
that readers in every worker never wait on the CLI writing, ``synchronous=NORMAL``
(durable at checkpoints, safe under WAL), and a busy timeout so concurrent writers
queue instead of failing.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlite_utils

from authz.store.migrations import LATEST, MIGRATIONS


class StoreError(RuntimeError):
    """The store cannot serve (missing file, wrong schema version, bad input)."""


class Database:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._local = threading.local()
        # A forked child (gunicorn worker) must open its own connections.
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: (db := ref()) and db._forget_connections())

    def _forget_connections(self) -> None:
        self._local = threading.local()

    @property
    def db(self) -> sqlite_utils.Database:
        """The calling thread's connection, opened on first use."""
        try:
            return self._local.db
        except AttributeError:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
            conn.execute("PRAGMA busy_timeout = 5000")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA synchronous = NORMAL")
            self._local.db = sqlite_utils.Database(conn)
            self._local.conn = conn
            return self._local.db

    def execute(self, sql: str, params: tuple | dict = ()) -> sqlite3.Cursor:
        # The raw connection: sqlite-utils' execute() adds transaction bookkeeping
        # that costs more than the indexed read itself on the decision hot path.
        try:
            conn = self._local.conn
        except AttributeError:
            conn = self.db.conn
        return conn.execute(sql, params)

    @contextmanager
    def write(self) -> Iterator[sqlite_utils.Database]:
        """A write transaction taken up front (BEGIN IMMEDIATE): all or nothing."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def version(self) -> int:
        return self.execute("PRAGMA user_version").fetchone()[0]

    def migrate(self) -> tuple[int, int]:
        """Create or upgrade the schema; returns (old version, new version)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db.enable_wal()
        with self.write() as db:
            old = db.execute("PRAGMA user_version").fetchone()[0]
            if old > LATEST:
                raise StoreError(
                    f"{self.path}: schema version {old} is newer than this authz ({LATEST})"
                )
            for number in range(old, LATEST):
                for statement in MIGRATIONS[number]:
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {LATEST}")
        return old, LATEST

    def check_ready(self) -> None:
        """Raise StoreError unless the file exists at the current schema version."""
        if not self.path.exists():
            raise StoreError(f"credential store {self.path} not found: run `authz db init`")
        # A connection of its own, closed at once: the app checks before gunicorn
        # forks, and an SQLite connection must not cross a fork.
        try:
            conn = sqlite3.connect(self.path)
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"credential store {self.path} is not readable: {exc}") from exc
        if version != LATEST:
            raise StoreError(
                f"credential store {self.path} is at schema version {version}, "
                f"this authz needs {LATEST}: run `authz db init`"
            )
