"""PostgreSQL connections shared by the store's tables: a psycopg-pool pool per process.

**Connections.** A serving process uses a pool; the CLI and other one-off users (not
``serving``) one connection per thread, opened on first use, so that a command opens
one connection and leaves no pool threads behind.

**Pools after fork.** A server forks its workers after the app was loaded once (the
start-up check, gunicorn's ``preload_app``): a connection must never cross a fork (two
processes on one socket). The pool is made on first use in each process; a forked child
forgets the parent's pool without closing it (closing would end the parent's sessions)
and makes its own.

**Writes.** Each write is one transaction. One that changes what replicas serve takes
the change-log lock (a transaction-level advisory lock) first, appends to ``change_log``
and sends ``NOTIFY authz_changes``, delivered at commit: ids are handed out in commit
order, so a replica reading ``id > last`` misses nothing.

**Closing** is for good: a closed database opens no pool or connection again (a pool made
after ``close`` would retry an unreachable server for hours in the background), and
raises ``StoreUnavailable`` instead.

**Faults.** An unreachable server raises ``StoreUnavailable`` (logged once per episode
by a serving process); the URL's password never appears in a message.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import psycopg_pool

from authz.store import redact
from authz.store.errors import StoreError, StoreUnavailable, StoreUnreachable
from authz.store.interface import CHANGE_LOG_RETENTION
from authz.store.postgres.migrations import LATEST, MIGRATIONS

log = logging.getLogger("authz.store")
CHANNEL = "authz_changes"
CHANGE_LOG_LOCK = 0x617574687A  # pg_advisory_xact_lock key of change-log writers ("authz")
MIGRATION_LOCK = CHANGE_LOG_LOCK + 1
CONNECT_TIMEOUT = 3  # seconds: an unreachable server fails requests that need it fast
POOL_TIMEOUT = 3.0
POOL_SIZE = 8  # per process: the blocking threads of a worker and its background threads
PRUNE_EVERY = 1000
_INHERITED: list = []  # pools of a parent process: kept, never closed, in a forked child


class Transaction:
    """The statements of one write transaction (``Database.write``)."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self.changed = False

    def execute(self, sql: str, params: tuple | dict = ()) -> psycopg.Cursor:
        return self.conn.execute(sql, params)

    def change(self, kind: str, ref: str) -> None:
        """Append to the change log (under the lock ``write`` took)."""
        now = time.time()
        entry = self.conn.execute("INSERT INTO change_log (kind, ref, at) VALUES (%s, %s, %s) RETURNING id",
                                  (kind, ref, now)).fetchone()[0]
        if entry % PRUNE_EVERY == 0:
            self.conn.execute("DELETE FROM change_log WHERE at < %s", (now - CHANGE_LOG_RETENTION,))
        self.changed = True


class Listener:
    """``LISTEN authz_changes`` on a connection of its own (what ``Replica`` waits on)."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        conn.execute(f"LISTEN {CHANNEL}")

    def wait(self, timeout: float) -> None:
        for _ in self.conn.notifies(timeout=timeout, stop_after=1):
            pass

    def close(self) -> None:
        self.conn.close()


class Database:
    """One PostgreSQL database: a pool per process, write transactions, the schema."""

    def __init__(self, url: str, serving: bool = False) -> None:
        self.url = url
        self.location = redact(url)
        self.serving = serving
        self._pool: psycopg_pool.ConnectionPool | None = None
        self._local = threading.local()  # not serving: this thread's connection
        self._lock = threading.Lock()
        self._fault: str | None = None
        self._closed = False
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: (db := ref()) and db._forget_pool())

    def _forget_pool(self) -> None:
        _INHERITED.extend(held for held in (self._pool, getattr(self._local, "conn", None)) if held is not None)
        self._pool = None
        self._local = threading.local()
        self._lock = threading.Lock()

    def pool(self) -> psycopg_pool.ConnectionPool:
        pool = self._pool
        if pool is None:
            with self._lock:
                self._refuse_if_closed()
                if self._pool is None:
                    self._pool = psycopg_pool.ConnectionPool(
                        self.url, min_size=1, max_size=POOL_SIZE, timeout=POOL_TIMEOUT, open=True,
                        name="authz-store", reconnect_timeout=24 * 3600,
                        kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT})
                pool = self._pool
        return pool

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A connection for one statement or transaction: the pool's (serving), else this thread's."""
        if self.serving:
            with self.pool().connection() as conn:
                yield conn
            return
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            self._refuse_if_closed()
            conn = self._local.conn = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
        yield conn

    def connect(self) -> psycopg.Connection:
        """A connection of its own (not pooled): the start-up check, the change listener."""
        self._refuse_if_closed()
        try:
            return psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
        except psycopg.Error as exc:
            raise self.failed(exc) from None

    def close(self) -> None:
        """Close the pool (serving) or this thread's connection, and open none again."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _refuse_if_closed(self) -> None:
        if self._closed:
            raise StoreUnavailable(f"credential store {self.location} is closed")

    # -- faults ----------------------------------------------------------------------
    def failed(self, exc: Exception) -> StoreError:
        """The error to raise for ``exc``; an unavailable server is logged once per episode."""
        if isinstance(exc, psycopg.errors.UndefinedTable):
            return StoreError(f"credential store {self.location} has no authz schema: run `authz db init`")
        if isinstance(exc, psycopg.IntegrityError):
            return StoreError(f"credential store {self.location}: {_first_line(exc)}")
        problem = f"credential store {self.location} is unavailable: {_first_line(exc)}"
        if self._fault is None and self.serving:
            log.error("%s; what needs the store is denied until it answers again", problem)
        self._fault = problem
        return StoreUnreachable(problem)

    def _answered(self) -> None:
        if self._fault is not None:
            self._fault = None
            if self.serving:
                log.warning("credential store %s answers again", self.location)

    # -- statements ------------------------------------------------------------------
    def query(self, sql: str, params: tuple | dict = ()) -> list[tuple]:
        try:
            with self.connection() as conn:
                rows = conn.execute(sql, params).fetchall()
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise self.failed(exc) from None
        if self._fault is not None:
            self._answered()
        return rows

    def one(self, sql: str, params: tuple | dict = ()) -> tuple | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    @contextmanager
    def write(self, changes: bool = True) -> Iterator[Transaction]:
        """One transaction, all or nothing; with ``changes``, under the change-log lock
        and announced to listeners at commit."""
        try:
            with self.connection() as conn, conn.transaction():
                if changes:
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (CHANGE_LOG_LOCK,))
                tx = Transaction(conn)
                yield tx
                if tx.changed:
                    conn.execute("SELECT pg_notify(%s, '')", (CHANNEL,))
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise self.failed(exc) from None
        if self._fault is not None:
            self._answered()

    # -- schema ------------------------------------------------------------------------
    def version(self) -> int:
        try:
            row = self.one("SELECT version FROM schema_version")
        except StoreError as exc:
            if "no authz schema" in str(exc):
                return 0
            raise
        return 0 if row is None else row[0]

    def migrate(self) -> tuple[int, int]:
        with self.write(changes=False) as tx:
            tx.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            tx.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = tx.execute("SELECT version FROM schema_version").fetchone()
            old = 0 if row is None else row[0]
            if old > LATEST:
                raise StoreError(f"{self.location}: schema version {old} is newer than this authz ({LATEST})")
            for number in range(old, LATEST):
                for statement in MIGRATIONS[number]:
                    tx.execute(statement)
            tx.execute("DELETE FROM schema_version")
            tx.execute("INSERT INTO schema_version (version) VALUES (%s)", (LATEST,))
        return old, LATEST

    def check_ready(self) -> None:
        """Raise StoreError unless the database answers at the current schema version (on
        a connection of its own, closed at once: this runs before servers fork)."""
        try:
            with psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT) as conn:
                row = conn.execute("SELECT version FROM schema_version").fetchone()
        except psycopg.errors.UndefinedTable:
            raise StoreError(f"credential store {self.location} has no authz schema: run `authz db init`") from None
        except psycopg.Error as exc:
            raise StoreError(f"credential store {self.location} is not reachable: {_first_line(exc)}") from None
        version = 0 if row is None else row[0]
        if version != LATEST:
            raise StoreError(f"credential store {self.location} is at schema version {version}, "
                             f"this authz needs {LATEST}: run `authz db init`")

    def problem(self) -> str | None:
        try:
            version = self.version()
        except StoreError as exc:
            return str(exc)
        if version != LATEST:
            return (f"credential store {self.location} is at schema version {version}, this authz needs {LATEST}: "
                    "run `authz db init`")
        return None


def _first_line(exc: Exception) -> str:
    """psycopg's message without its detail lines (never the connection string)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
