"""SQLite connection handling shared by the store's tables.

One connection per thread and per process (gunicorn forks after import), WAL so
that readers in every worker never wait on the CLI writing, ``synchronous=NORMAL``
(durable at checkpoints, safe under WAL), and a busy timeout so concurrent writers
queue instead of failing.

**Store identity.** SQLite keeps reading the file it opened even after it was deleted
or replaced (``mv backup.db authz.db``), and a truncated file is served from the
page cache until it turns into errors. So each process compares, at most every
``CHECK_SECONDS`` on the way to a query, the file at the configured path with the one
it has open (device and inode, SQLite header, size against the header's page count):
a replaced file that is a valid store is reopened (every thread's connection is
dropped); a deleted, truncated or foreign file fails closed — queries raise
``StoreUnavailable`` (the engine answers 500 ``internal_error`` for store-backed
credentials, ``/readyz`` 503) — with one log line per episode, and the store is
reopened by itself once a valid file is back. Connections open with ``mode=rw``: a
missing file is an error, never a new empty store (only ``migrate``, i.e.
``authz db init``, creates one).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import struct
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import sqlite_utils

from authz.store.errors import StoreError, StoreUnavailable
from authz.store.interface import CHANGE_LOG_RETENTION
from authz.store.sqlite.migrations import LATEST, MIGRATIONS

log = logging.getLogger("authz.store")
CHECK_SECONDS = 0.25
BUSY_SECONDS = 5.0  # how long a writer waits for another process's write lock
_MAGIC = b"SQLite format 3\0"


def _identity_of(path_or_fd: str | int) -> tuple[int, int] | None:
    """(device, inode) of a path, or of the file an open descriptor refers to."""
    try:
        st = os.stat(path_or_fd)
    except OSError:
        return None
    return st.st_dev, st.st_ino


_SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE = 1006  # sqlite3.h


def _no_checkpoint_on_close(conn: sqlite3.Connection) -> None:
    """A connection closing last checkpoints and then deletes the WAL *by name*: after
    the store was replaced, that name is the new store's WAL, and deleting it loses
    committed writes (a revocation). Checkpoints happen anyway as the WAL grows."""
    setconfig = getattr(conn, "setconfig", None)  # Python 3.12+
    if setconfig is not None:
        setconfig(_SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, True)
        return
    _no_checkpoint_on_close_ctypes(conn)


def _no_checkpoint_on_close_ctypes(conn: sqlite3.Connection) -> None:
    """Python 3.11: ``sqlite3_db_config`` through ctypes on the connection's handle (the
    first field after the object header in CPython's ``pysqlite_Connection``), used
    only after the handle proves itself by naming this connection's file."""
    global _LIB
    if _LIB is False or sys.implementation.name != "cpython" or sys.version_info[:2] != (3, 11):
        return  # the layout below is CPython 3.11's (3.12+ has Connection.setconfig)
    try:
        if _LIB is None:
            import _sqlite3
            import ctypes

            lib = ctypes.CDLL(_sqlite3.__file__)
            lib.sqlite3_db_filename.restype = ctypes.c_char_p
            lib.sqlite3_db_filename.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
            lib.sqlite3_db_config.restype = ctypes.c_int
            _LIB = lib
        import ctypes

        handle = ctypes.c_void_p.from_address(id(conn) + object.__basicsize__).value
        name = _LIB.sqlite3_db_filename(handle, b"main") if handle else None
        files = {row[2] for row in conn.execute("PRAGMA database_list") if row[1] == "main"}
        if not name or name.decode(errors="replace") not in files:
            _LIB = False
            return
        _LIB.sqlite3_db_config(ctypes.c_void_p(handle), ctypes.c_int(_SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE),
                               ctypes.c_int(1), ctypes.c_void_p(None))
    except (OSError, AttributeError, ImportError):
        _LIB = False


_LIB = None
PRUNE_EVERY = 1000  # change-log entries between prunes of those past CHANGE_LOG_RETENTION


def append_change(db, kind: str, ref: str) -> None:
    """Append to the change log inside the caller's write transaction (see ``interface.ChangeFeed``)."""
    now = time.time()
    entry = db.execute("INSERT INTO change_log (kind, ref, at) VALUES (?, ?, ?)", (kind, ref, now)).lastrowid
    if entry % PRUNE_EVERY == 0:
        db.execute("DELETE FROM change_log WHERE at < ?", (now - CHANGE_LOG_RETENTION,))


class Database:
    """One SQLite file: per-thread connections, identity checks, write transactions."""

    def __init__(self, path: str | os.PathLike[str], serving: bool = False) -> None:
        self.path = Path(path)
        # Long-running servers never checkpoint-and-delete the WAL on close (see
        # _no_checkpoint_on_close); the CLI does, so that a store nobody serves is whole
        # in its main file.
        self.serving = serving
        self._local = threading.local()
        self._generation = 0  # bumped to make every thread reopen its connection
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the file we serve
        self._next_check = 0.0
        self._fault: str | None = None  # why the file at the path cannot serve now
        self._query_fault: str | None = None  # the last query error, until a query succeeds
        self._logged: str | None = None
        self._suspect: str | None = None  # a truncation seen once (a checkpoint may be under way)
        self._create = False
        self._wal_fd: int | None = None
        self._fd: int | None = None
        self._fd_identity: tuple[int, int] | None = None
        self._check_lock = threading.Lock()
        # A forked child (gunicorn worker) must open its own connections.
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: (db := ref()) and db._forget_connections())

    def close(self) -> None:
        """Close this thread's connection (another thread's goes with its thread); the
        next query opens one again."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with suppress(sqlite3.Error):
                conn.close()

    def _forget_connections(self) -> None:
        self._local = threading.local()
        self._check_lock = threading.Lock()  # may have been held by a thread that did not fork
        self._next_check = 0.0

    # -- identity --------------------------------------------------------------
    def _inspect(self) -> tuple[str | None, tuple[int, int] | None]:
        """What is at the path now: (problem or None, identity)."""
        try:
            st = os.stat(self.path)
            header = os.pread(self._header_fd((st.st_dev, st.st_ino)), 100, 0)
        except FileNotFoundError:
            return f"credential store {self.path} was deleted (or moved away)", None
        except OSError as exc:
            return f"credential store {self.path} cannot be read: {exc.strerror}", None
        identity = (st.st_dev, st.st_ino)
        if st.st_size == 0:
            return f"credential store {self.path} is empty (0 bytes)", identity
        if len(header) < 100 or not header.startswith(_MAGIC):
            return f"credential store {self.path} is not an SQLite database (overwritten or corrupted)", identity
        page_size = struct.unpack(">H", header[16:18])[0]
        page_size = 65536 if page_size == 1 else page_size
        pages = struct.unpack(">I", header[28:32])[0]
        # The header's page count is valid only while its version stamp matches.
        if header[24:28] == header[92:96] and st.st_size < page_size * pages:
            return (f"credential store {self.path} is truncated ({st.st_size} bytes, "
                    f"its header says {page_size * pages})"), identity
        return None, identity

    def _header_fd(self, identity: tuple[int, int]) -> int:
        """A descriptor kept open on the store file for reading its header. Never
        open-read-close: closing any descriptor of a file drops every POSIX lock this
        process holds on it, SQLite's included."""
        if self._fd is not None and self._fd_identity != identity:
            os.close(self._fd)  # the old file: only connections being dropped lock it
            self._fd = None
        if self._fd is None:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            st = os.fstat(fd)
            self._fd, self._fd_identity = fd, (st.st_dev, st.st_ino)
        return self._fd

    def _remember_wal(self) -> None:
        """Hold the WAL beside the store we serve open, so that its inode number cannot be
        reused by a new file and it can be recognised after a replacement."""
        wal = f"{self.path}-wal"
        if self._wal_fd is not None:
            if _identity_of(wal) == _identity_of(self._wal_fd):
                return
            os.close(self._wal_fd)
            self._wal_fd = None
        with suppress(OSError):  # no WAL yet: next time
            self._wal_fd = os.open(wal, os.O_RDONLY | os.O_CLOEXEC)

    def _drop_stale_wal(self) -> None:
        """The WAL (and its index) at the path still belong to the file that was replaced:
        SQLite ties them to the database by name only, so the new file would be read
        through the old file's pages. Remove them — only when they are the very files
        this process saw beside the old store (the new store's own WAL is left alone)."""
        wal = f"{self.path}-wal"
        if self._wal_fd is None:
            return
        stale = _identity_of(wal) == _identity_of(self._wal_fd)
        os.close(self._wal_fd)
        self._wal_fd = None
        if stale:
            for name in (wal, f"{self.path}-shm"):
                with suppress(OSError):
                    os.unlink(name)

    def _validate(self) -> str | None:
        """Can a file that just appeared at the path serve? Opened on the side, closed at once."""
        try:
            conn = sqlite3.connect(f"file:{self.path}?mode=rw", uri=True, timeout=1.0)
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version == LATEST:
                    conn.execute("SELECT 1 FROM api_keys LIMIT 1").fetchall()
            finally:
                conn.close()
        except sqlite3.Error as exc:
            return f"credential store {self.path} is not usable: {exc}"
        if version != LATEST:
            return f"credential store {self.path} is at schema version {version}, this authz needs {LATEST}"
        return None

    def _verify(self, wait: bool = False) -> None:
        """Compare the file at the path with the one we serve (see the module docstring)."""
        if not self._check_lock.acquire(timeout=5.0 if wait else -1, blocking=wait):
            return  # another thread is looking right now
        try:
            self._next_check = time.monotonic() + CHECK_SECONDS
            if str(self.path) == ":memory:" or (self._create and not self.path.exists()):
                return  # `authz db init` about to create it
            problem, identity = self._inspect()
            if problem is not None and "truncated" in problem and self._suspect != problem:
                # A checkpoint writes the header before the pages it counts: believe a
                # truncation seen twice in a row, not once.
                self._suspect, problem = problem, None
                self._next_check = time.monotonic() + CHECK_SECONDS / 5
                return
            self._suspect = None
            replaced = problem is None and self._identity is not None and identity != self._identity
            if replaced:
                self._drop_stale_wal()
            if problem is None and (replaced or self._fault is not None):
                problem = self._validate()
            if problem is not None:
                if self._fault is None:
                    self._generation += 1  # drop connections to the old file now
                self._fault = problem
                if self._logged != problem:
                    self._logged = problem
                    self._say(logging.ERROR, "%s; denying store-backed credentials (500 internal_error) until a valid "
                              "store is back", problem)
                return
            if replaced or self._fault is not None:
                self._generation += 1
                self._say(logging.WARNING, "credential store %s %s; reopened it", self.path,
                            "was replaced by another valid store" if replaced else "is valid again")
            self._identity, self._fault = identity, None
            if self._query_fault is None:
                self._logged = None  # else the episode (queries failing) goes on: say it once
            self._remember_wal()
        finally:
            self._check_lock.release()

    def _say(self, level: int, message: str, *args) -> None:
        """Episode lines are for a server's error log; the CLI reports its one line itself."""
        if self.serving:
            log.log(level, message, *args)

    def problem(self) -> str | None:
        """Why the store cannot serve now (checked afresh), or None: for ``/readyz``.
        Waits for a check another thread has under way, and looks again at a truncation
        seen once (a worker that served nothing since has not seen it twice yet)."""
        for _ in range(2):
            self._next_check = 0.0
            self._verify(wait=True)
            if self._suspect is None:
                break
            time.sleep(CHECK_SECONDS / 5)
        return self._fault or self._query_fault

    def _connection(self) -> sqlite3.Connection:
        if time.monotonic() >= self._next_check:
            self._verify()
        if self._fault is not None:
            raise StoreUnavailable(self._fault)
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is None or local.generation != self._generation:
            if conn is not None:
                with suppress(sqlite3.Error):
                    conn.close()
            local.conn = None
            mode = "rwc" if self._create else "rw"
            try:
                conn = sqlite3.connect(f"file:{self.path}?mode={mode}", uri=True, isolation_level=None,
                                       timeout=BUSY_SECONDS)
                conn.execute(f"PRAGMA busy_timeout = {int(BUSY_SECONDS * 1000)}")
                conn.execute("PRAGMA foreign_keys = ON")
                conn.execute("PRAGMA synchronous = NORMAL")
                if self.serving:
                    _no_checkpoint_on_close(conn)
            except sqlite3.Error as exc:
                raise self._query_failed(exc) from None
            local.db = sqlite_utils.Database(conn)
            local.conn, local.generation = conn, self._generation
        return conn

    def _query_failed(self, exc: sqlite3.Error) -> StoreUnavailable:
        problem = f"credential store {self.path}: {exc}"
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            # Contention, not a broken store (the busy timeout has been waited out).
            return StoreUnavailable(f"credential store {self.path}: store is locked by another process "
                                    f"(waited {BUSY_SECONDS:g} s)")
        self._query_fault = problem
        if self._logged != problem:
            self._logged = problem
            self._say(logging.ERROR, "%s; denying store-backed credentials (500 internal_error) until it answers again",
                      problem)
        self._next_check = 0.0  # and look at the file at once: replaced, truncated?
        return StoreUnavailable(problem)

    @property
    def db(self) -> sqlite_utils.Database:
        """The calling thread's connection, opened on first use."""
        self._connection()
        return self._local.db

    def execute(self, sql: str, params: tuple | dict = ()) -> sqlite3.Cursor:
        # The raw connection: sqlite-utils' execute() adds transaction bookkeeping
        # that costs more than the indexed read itself on the decision hot path.
        conn = self._connection()
        try:
            cursor = conn.execute(sql, params)
        except sqlite3.DatabaseError as exc:
            raise self._query_failed(exc) from None
        if self._query_fault is not None:
            self._query_fault = None
            if self._fault is None:
                self._logged = None
                self._say(logging.WARNING, "credential store %s answers again", self.path)
        return cursor

    @contextmanager
    def write(self) -> Iterator[sqlite_utils.Database]:
        """A write transaction taken up front (BEGIN IMMEDIATE): all or nothing. SQLite
        errors come out as ``StoreUnavailable`` (logged once per episode)."""
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._query_failed(exc) from None
        try:
            yield db
        except BaseException as exc:
            with suppress(sqlite3.Error):  # nothing to roll back: the error ended the transaction
                db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self._query_failed(exc) from None
            raise
        try:
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._query_failed(exc) from None

    def version(self) -> int:
        return self.execute("PRAGMA user_version").fetchone()[0]

    def migrate(self) -> tuple[int, int]:
        """Create or upgrade the schema; returns (old version, new version)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._create = True  # the one place a store may be created
        try:
            self.db.enable_wal()
        finally:
            self._create = False
        self._next_check = 0.0
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
