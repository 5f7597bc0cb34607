"""API keys: creation, lookup by fingerprint, rotation, revocation, last use.

The secret never reaches this module's tables: callers pass the fingerprint
(``apikeys.fingerprint``) and the display form.
"""

from __future__ import annotations

import atexit
import ipaddress
import logging
import os
import threading
import time
import weakref
from typing import NamedTuple

from authz.credentials import apikeys
from authz.store.database import Database, StoreError, StoreUnavailable
from authz.store.principals import Principals, check_tokens

log = logging.getLogger("authz.store")

_FIND = (
    "SELECT k.id, k.env, k.scopes, k.allow_ips, k.status, k.expires_at, "
    "p.name, p.kind, p.disabled, p.roles, k.hash "
    "FROM api_keys k JOIN principals p ON p.id = k.principal_id WHERE k.hash = ?"
)
_LIST = (
    "SELECT k.id, p.name, p.kind, k.display, k.env, k.status, k.scopes, k.allow_ips, "
    "k.created_at, k.expires_at, k.revoked_at, k.last_used_at, k.rotated_from, "
    "k.replaced_by, p.disabled FROM api_keys k JOIN principals p ON p.id = k.principal_id "
)


class KeyMatch(NamedTuple):
    """What the hot path needs to judge a presented key, read in one indexed query."""

    id: str
    env: str
    scopes: frozenset[str]
    allow_ips: str
    status: str
    expires_at: float | None
    principal: str
    kind: str
    principal_disabled: bool
    roles: frozenset[str]
    hash: str


def parse_cidrs(values) -> str:
    """Validate CIDRs and return them normalised and space-joined."""
    out = []
    for value in values:
        try:
            out.append(str(ipaddress.ip_network(value.strip(), strict=False)))
        except ValueError:
            raise StoreError(f"invalid CIDR {value!r} (e.g. 203.0.113.0/24 or 2001:db8::/32)") from None
    return " ".join(out)


class ApiKeys:
    def __init__(self, database: Database, principals: Principals) -> None:
        self.database = database
        self.principals = principals

    def find(self, fingerprint: str) -> KeyMatch | None:
        return self._match(self.database.execute(_FIND, (fingerprint,)).fetchone())

    def find_by_id(self, key_id: str) -> KeyMatch | None:
        """For dry runs (``authz policy explain --as-key``): the key without its secret."""
        return self._match(self.database.execute(_FIND.replace("WHERE k.hash = ?", "WHERE k.id = ?"),
                                                 (key_id,)).fetchone())

    @staticmethod
    def _match(row) -> KeyMatch | None:
        if row is None:
            return None
        return KeyMatch(
            row[0], row[1], frozenset(row[2].split()), row[3], row[4], row[5],
            row[6], row[7], bool(row[8]), frozenset(row[9].split()), row[10],
        )

    def create(
        self,
        principal: str,
        scopes=(),
        env: str = "live",
        allow_ips=(),
        expires_at: float | None = None,
        *,
        rotated_from: str | None = None,
        db=None,
    ) -> tuple[dict, str]:
        """Create a key; returns (its record, the secret — to show once, never store)."""
        if env not in apikeys.ENVIRONMENTS:
            raise StoreError(f"environment must be one of {', '.join(apikeys.ENVIRONMENTS)}")
        scope_text = check_tokens(tuple(scopes), "scope")
        cidr_text = parse_cidrs(allow_ips)
        secret = apikeys.generate(env)
        key_id = apikeys.new_key_id()
        now = time.time()
        if expires_at is not None and expires_at <= now:
            raise StoreError("expiry must be in the future")

        def insert(tx) -> None:
            principal_id, _ = self.principals.ensure(tx, principal, "client")
            tx.execute(
                "INSERT INTO api_keys (id, principal_id, hash, display, env, scopes, allow_ips, "
                "status, created_at, expires_at, rotated_from) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 'active', ?, ?, ?)",
                (key_id, principal_id, apikeys.fingerprint(secret), apikeys.display(secret),
                 env, scope_text, cidr_text, now, expires_at, rotated_from),
            )

        if db is None:
            with self.database.write() as tx:
                insert(tx)
        else:
            insert(db)
        return self.get(key_id), secret

    def get(self, key_id: str) -> dict:
        row = self.database.execute(_LIST + "WHERE k.id = ?", (key_id,)).fetchone()
        if row is None:
            raise StoreError(f"no API key with id {key_id!r}")
        return _record(row)

    def list(self, principal: str | None = None) -> list[dict]:
        if principal is None:
            rows = self.database.execute(_LIST + "ORDER BY p.name, k.created_at").fetchall()
        else:
            rows = self.database.execute(
                _LIST + "WHERE p.name = ? ORDER BY k.created_at", (principal,)
            ).fetchall()
        return [_record(row) for row in rows]

    def revoke(self, key_id: str) -> dict:
        with self.database.write() as db:
            row = db.execute("SELECT status FROM api_keys WHERE id = ?", (key_id,)).fetchone()
            if row is None:
                raise StoreError(f"no API key with id {key_id!r}")
            if row[0] != "revoked":
                db.execute(
                    "UPDATE api_keys SET status = 'revoked', revoked_at = ? WHERE id = ?",
                    (time.time(), key_id),
                )
        return self.get(key_id)

    def rotate(self, key_id: str, grace_seconds: float) -> tuple[dict, dict, str]:
        """Issue a successor with the same principal, scopes, IPs and lifetime.

        The old key becomes ``deprecated`` and stays valid until the grace period
        ends (or its own expiry, whichever is first). Returns (old, new, secret).
        """
        if grace_seconds < 0:
            raise StoreError("grace must not be negative")
        now = time.time()
        with self.database.write() as db:
            row = db.execute(
                "SELECT k.status, k.scopes, k.allow_ips, k.env, k.created_at, k.expires_at, "
                "k.replaced_by, p.name FROM api_keys k JOIN principals p "
                "ON p.id = k.principal_id WHERE k.id = ?",
                (key_id,),
            ).fetchone()
            if row is None:
                raise StoreError(f"no API key with id {key_id!r}")
            status, scopes, allow_ips, env, created, expires, replaced_by, principal = row
            if status == "revoked":
                raise StoreError(f"{key_id} is revoked: create a new key instead")
            if replaced_by:
                raise StoreError(f"{key_id} was already rotated to {replaced_by}: rotate that key")
            if expires is not None and expires <= now:
                raise StoreError(f"{key_id} has expired: create a new key instead")
            new_expiry = None if expires is None else now + (expires - created)
            new, secret = self.create(
                principal, scopes.split(), env, allow_ips.split(), new_expiry,
                rotated_from=key_id, db=db,
            )
            old_expiry = now + grace_seconds if expires is None else min(expires, now + grace_seconds)
            db.execute(
                "UPDATE api_keys SET status = 'deprecated', expires_at = ?, replaced_by = ? "
                "WHERE id = ?",
                (old_expiry, new["id"], key_id),
            )
        return self.get(key_id), self.get(new["id"]), secret


def _record(row) -> dict:
    now = time.time()
    status = row[5]
    if status != "revoked" and row[9] is not None and row[9] <= now:
        status = "expired"
    return {
        "id": row[0], "principal": row[1], "principal_kind": row[2], "display": row[3],
        "env": row[4], "status": status, "scopes": row[6].split(), "allow_ips": row[7].split(),
        "created_at": row[8], "expires_at": row[9], "revoked_at": row[10],
        "last_used_at": row[11], "rotated_from": row[12], "replaced_by": row[13],
        "principal_disabled": bool(row[14]),
    }


class LastUsedRecorder:
    """Records when keys were last used without a write per request.

    The hot path only notes the time in a dict; a background thread per worker
    writes the batch every ``interval`` seconds (and once more at exit), so
    ``authz keys list`` lags by at most that much.
    """

    def __init__(self, database: Database, interval: float = 30.0) -> None:
        self.database = database
        self.interval = interval
        self._pending: dict[str, float] = {}
        self._lock = threading.Lock()
        self._started = False
        # The flushing thread does not survive a fork: each worker starts its own.
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: (r := ref()) and r._forget_thread())

    def _forget_thread(self) -> None:
        self._started = False
        self._lock = threading.Lock()

    def record(self, key_id: str) -> None:
        self._pending[key_id] = time.time()
        if not self._started:
            self._start()

    def _start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
            thread = threading.Thread(target=self._run, name="authz-last-used", daemon=True)
            thread.start()
            atexit.register(self.flush)

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            self.flush()

    def flush(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, {}
        if not batch:
            return
        try:
            with self.database.write() as db:
                db.conn.executemany(
                    "UPDATE api_keys SET last_used_at = MAX(COALESCE(last_used_at, 0), ?) "
                    "WHERE id = ?",
                    [(ts, key_id) for key_id, ts in batch.items()],
                )
        except StoreUnavailable:
            pass  # the store logs its own fault once per episode
        except Exception:
            log.warning("could not record last use of %d API key(s)", len(batch), exc_info=True)
