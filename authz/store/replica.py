"""A serving process's copy of a shared store's credential state, kept in memory.

Many replicas share one PostgreSQL database; none of them may pay a network round trip
per request. Each worker process serves credential reads from memory:

- **API keys** are cached by fingerprint after one indexed lookup. Which fingerprints
  exist at all is a set of 64-bit fingerprint prefixes, loaded once and kept up to date
  from the change log: a presented key whose prefix is not in it is unknown without a
  query. Before saying so the replica catches up with the change log (a miss does so at
  most every ``MISS_POLL_SECONDS``, shared by every request; the follower's own reads
  do not count), so a key created a moment ago works at once, and a flood of random
  well-formed keys costs at most that one small query per interval, never one per
  request (during such a flood, a new key may wait that long).
- **Users** (and unknown user names) and **certificate registrations** are cached by
  name and fingerprint after one lookup; **revocations** (jti, certificates) and the
  **signing keys** are held whole.

A background thread per process follows the change log (``Store.changes``): woken by
the backend's listener (``LISTEN authz_changes`` on PostgreSQL) and polling every
``POLL_SECONDS`` anyway, since a notification can be lost. Each entry drops or updates
what it names. A cached value read from the store while a change was being applied is
not kept (the epoch check), so a revocation can never be overwritten by an older read.

**Staleness bound.** A replica that has not confirmed it is current (a successful read
of the change log) for ``max_staleness`` seconds denies everything that needs the store
with ``StoreUnreachable`` (500 ``upstream_unavailable``), says so in ``problem()``
(``/readyz``) and in the log, once; it recovers by itself once the database answers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Protocol

from authz.background import start
from authz.store.errors import StoreError, StoreUnavailable, StoreUnreachable
from authz.store.interface import (
    ANY_ISSUER,
    CHANGE_API_KEY,
    CHANGE_CERTIFICATE,
    CHANGE_LOG_RETENTION,
    CHANGE_PRINCIPAL,
    CHANGE_REVOCATION,
    CHANGE_REVOCATIONS,
    CHANGE_SIGNING_KEY,
    Store,
)
from authz.store.records import ApiKeyMatch, CertificateStatus, Change, IdentitySigningKey, UserCredentials

log = logging.getLogger("authz.store")
POLL_SECONDS = 0.5  # the longest a lost notification delays a change
MISS_POLL_SECONDS = 0.05  # catching up on a key the replica does not know: at most this often
PREFIX = 16  # hex digits of a fingerprint kept in the filter (64 bits)
MAX_CACHED = 200_000  # entries per cache before it is emptied (unknown user names are cached too)
BATCH = 1000


class Listener(Protocol):
    """What a backend that announces changes gives a replica (PostgreSQL: LISTEN)."""

    def wait(self, timeout: float) -> None:
        """Return on an announcement, or after ``timeout`` seconds."""

    def close(self) -> None: ...


class Replica:
    """Implements ``ServingStore`` over ``base``, credential reads from memory."""

    def __init__(self, base: Store, max_staleness: float = 30.0,
                 listener: Callable[[], Listener] | None = None, poll_seconds: float = POLL_SECONDS) -> None:
        self.base = base
        self.max_staleness = max_staleness
        self.poll_seconds = poll_seconds
        self._listener = listener
        self.keys = _Keys(self)
        self.principals = _Users(self)
        self.revocations = _Revocations(self)
        self.certificates = _Certificates(self)
        self.signing_keys = _SigningKeys(self)
        self.policy_snapshots = base.policy_snapshots
        self.nonces = base.nonces  # one-time values must be seen by every replica: the shared store's
        self.changes = base.changes
        self.outbox = base.outbox  # events are written through, never cached
        self.last_used = base.last_used
        self.queries = 0  # credential reads that went to the store (tests and the bench count them)
        self.polls = 0  # reads of the change log
        self.miss_polls = 0  # of which a presented key missing from the filter asked for
        self._lock = threading.Lock()  # one catch-up at a time
        self._start_lock = threading.Lock()
        self._cache_lock = threading.Lock()  # a cache fill and a change applied, one at a time
        self._pid = 0  # the process whose follower thread runs
        self._closed = False
        self._epoch = 0  # bumped by every change applied: a read begun before is not cached
        self._last_id = 0
        self._synced = False  # the whole state was loaded once
        self._confirmed = float("-inf")  # monotonic time of the last confirmed catch-up
        self._last_miss = float("-inf")  # monotonic time of the last catch-up a miss asked for
        self._fault: str | None = None  # why the last catch-up failed
        self._stale_said = False
        self._fingerprints: set[str] = set()
        self._keys: dict[str, ApiKeyMatch | None] = {}
        self._users: dict[str, UserCredentials | None] = {}
        self._certs: dict[str, tuple[str | None, str | None, bool]] = {}
        self._revoked: set[tuple[str, str, str]] = set()
        self._signing: tuple[IdentitySigningKey | None, list[tuple[float | None, dict]]] = (None, [])
        os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._cache_lock = threading.Lock()

    # -- following the change log ----------------------------------------------------------
    def _ensure_following(self) -> None:
        """Start this process's follower (once per process: a forked worker starts its own)."""
        if self._pid == os.getpid() and not self._closed:
            return
        with self._start_lock:
            if self._closed:
                raise StoreUnavailable(f"credential store {self.base.location} is closed")
            if self._pid == os.getpid():
                return
            self.catch_up()
            self._pid = os.getpid()
            start("authz-replica", self._follow)

    def _follow(self) -> None:
        pid = os.getpid()
        listener: Listener | None = None
        while self._pid == pid and not self._closed:
            try:
                if listener is None and self._listener is not None:
                    listener = self._listener()
                if listener is not None:
                    listener.wait(self.poll_seconds)
                else:
                    time.sleep(self.poll_seconds)
            except Exception:  # the listener's connection went: poll, and reconnect next time
                if listener is not None:
                    _close_quietly(listener)
                listener = None
                time.sleep(self.poll_seconds)
            if self._closed:
                break
            self.catch_up()
        if listener is not None:
            _close_quietly(listener)

    def catch_up(self) -> bool:
        """Apply what the change log says since the last entry applied; False when the
        store could not be read (the replica goes on serving from memory until stale)."""
        with self._lock:
            began = time.monotonic()
            self.polls += 1
            try:
                if not self._synced or began - self._confirmed > CHANGE_LOG_RETENTION / 2:
                    self._load_everything()
                while True:
                    changes = self.base.changes.since(self._last_id, BATCH)
                    for change in changes:
                        with self._cache_lock:
                            self._apply(change)
                            self._last_id = change.id
                    if len(changes) < BATCH:
                        break
            except StoreError as exc:
                if self._closed:
                    return False  # closed meanwhile: nothing to follow, nothing to say
                if self._fault is None:
                    log.error("replica cannot follow the credential store: %s; serving from memory for at most "
                              "%g s (AUTHZ_MAX_STALENESS)", exc, self.max_staleness)
                self._fault = str(exc)
                return False
            self._confirmed = began
            if self._fault is not None or self._stale_said:
                log.warning("replica follows the credential store %s again", self.base.location)
            self._fault, self._stale_said = None, False
            return True

    def _load_everything(self) -> None:
        """The whole state afresh (first start, or after too long away from the log). The
        log position is read first: what changes while loading is applied again after."""
        last = self.base.changes.latest()
        fingerprints = {fp[:PREFIX] for fp in self.base.keys.fingerprints()}
        revoked = {(r.kind, r.issuer or ANY_ISSUER, r.value) for r in self.base.revocations.list()}
        signing = self._read_signing_keys()
        with self._cache_lock:
            self._epoch += 1
            self._fingerprints, self._revoked, self._signing = fingerprints, revoked, signing
            self._keys, self._users, self._certs = {}, {}, {}
            self._last_id, self._synced = last, True

    def _read_signing_keys(self) -> tuple[IdentitySigningKey | None, list[tuple[float | None, dict]]]:
        until = {record.kid: record.publish_until for record in self.base.signing_keys.list()}
        published = [(until.get(jwk.get("kid")), jwk) for jwk in self.base.signing_keys.published()]
        return self.base.signing_keys.active(), published

    def _apply(self, change: Change) -> None:
        self._epoch += 1
        kind, ref = change.kind, change.ref
        if kind == CHANGE_API_KEY:
            self._keys.pop(ref, None)
            self._fingerprints.add(ref[:PREFIX])
        elif kind == CHANGE_PRINCIPAL:
            self._users.pop(ref, None)
            self._keys = {fp: m for fp, m in self._keys.items() if m is None or m.principal != ref}
            self._certs = {fp: c for fp, c in self._certs.items() if c[0] != ref}
        elif kind == CHANGE_REVOCATION:
            revocation_kind, issuer, value = json.loads(ref)
            self._revoked.add((revocation_kind, issuer, value))  # only a purge removes one
        elif kind == CHANGE_REVOCATIONS:
            self._revoked = {(r.kind, r.issuer or ANY_ISSUER, r.value) for r in self.base.revocations.list()}
        elif kind == CHANGE_CERTIFICATE:
            self._certs.pop(ref, None)
        elif kind == CHANGE_SIGNING_KEY:
            self._signing = self._read_signing_keys()
        # policy_snapshot: snapshots are read from the store when needed, not held here

    # -- serving -------------------------------------------------------------------------------
    def fresh(self) -> None:
        """Raise ``StoreUnreachable`` unless the replica confirmed it was current within
        ``max_staleness`` seconds."""
        self._ensure_following()
        age = time.monotonic() - self._confirmed
        if age > self.max_staleness:
            problem = self._stale_problem(age)
            if not self._stale_said:
                self._stale_said = True
                log.error("%s: denying what needs the store (500 upstream_unavailable) until it answers", problem)
            raise StoreUnreachable(problem)

    def _stale_problem(self, age: float) -> str:
        since = "never" if age == float("inf") else f"for {age:.0f} s"
        return (f"credential store {self.base.location} not confirmed current {since} "
                f"(AUTHZ_MAX_STALENESS={self.max_staleness:g}): {self._fault or 'not reached yet'}")

    def cached(self, cache: dict, key: str, read: Callable[[], object]) -> object:
        """``cache[key]``, else ``read()`` (one store query), kept unless a change was applied meanwhile."""
        self.fresh()
        try:
            return cache[key]
        except KeyError:
            pass
        epoch = self._epoch
        value = read()
        self.queries += 1
        with self._cache_lock:
            if epoch == self._epoch:
                if len(cache) >= MAX_CACHED:
                    cache.clear()
                cache[key] = value
        return value

    def may_exist(self, fingerprint: str) -> bool:
        """Whether a key with this fingerprint may exist: in the filter, or in it after
        catching up with the change log (misses: at most every MISS_POLL_SECONDS). Only
        misses count against that interval: a catch-up the follower began (woken by the
        very notification of this key, or polling) may have begun before the key was
        committed, so it must not stand in for the miss's own."""
        if fingerprint[:PREFIX] in self._fingerprints:
            return True
        now = time.monotonic()
        if now - self._last_miss >= MISS_POLL_SECONDS:
            self._last_miss = now
            self.miss_polls += 1
            self.catch_up()
        return fingerprint[:PREFIX] in self._fingerprints

    def close(self) -> None:
        """Stop following the change log (the follower ends at its next wake-up, at most
        ``poll_seconds`` later, closing its listener) and close the store; what needs the
        store is denied from then on."""
        with self._start_lock:
            self._closed = True
        self.base.close()

    @property
    def location(self) -> str:
        return self.base.location

    def check_ready(self) -> None:
        self.base.check_ready()

    def staleness(self) -> float:
        """Seconds since this process last confirmed it is current (``/metrics``: a
        replica that keeps growing this is heading for AUTHZ_MAX_STALENESS)."""
        self._ensure_following()
        return time.monotonic() - self._confirmed

    def problem(self) -> str | None:
        """Stale past the bound: why; else the store's own problem, if it answers."""
        try:
            self._ensure_following()  # catches the store's errors itself, but for a closed replica
        except StoreUnavailable as exc:
            return str(exc)
        age = time.monotonic() - self._confirmed
        if age > self.max_staleness:
            return self._stale_problem(age)
        return None


def _close_quietly(listener: Listener) -> None:
    with contextlib.suppress(Exception):  # a broken connection closing: nothing to do
        listener.close()


class _Keys:
    def __init__(self, replica: Replica) -> None:
        self.replica = replica

    def find(self, fingerprint: str) -> ApiKeyMatch | None:
        replica = self.replica
        replica.fresh()
        if fingerprint not in replica._keys and not replica.may_exist(fingerprint):
            return None
        return replica.cached(replica._keys, fingerprint, lambda: replica.base.keys.find(fingerprint))  # type: ignore[return-value]


class _Users:
    def __init__(self, replica: Replica) -> None:
        self.replica = replica

    def find_user(self, name: str) -> UserCredentials | None:
        replica = self.replica
        return replica.cached(replica._users, name, lambda: replica.base.principals.find_user(name))  # type: ignore[return-value]

    def set_password(self, name: str, password_hash: str, *, expected_old: str | None = None) -> bool:
        changed = self.replica.base.principals.set_password(name, password_hash, expected_old=expected_old)
        self.replica._users.pop(name, None)  # the change log says so too, a moment later
        return changed


class _Revocations:
    def __init__(self, replica: Replica) -> None:
        self.replica = replica

    def is_revoked(self, kind: str, value: str, issuer: str = ANY_ISSUER) -> bool:
        self.replica.fresh()
        revoked = self.replica._revoked
        return (kind, issuer, value) in revoked or (kind, ANY_ISSUER, value) in revoked


class _Certificates:
    def __init__(self, replica: Replica) -> None:
        self.replica = replica

    def is_revoked(self, fingerprint: str, issuer_dn: str, serial_hex: str) -> bool:
        self.replica.fresh()
        revoked = self.replica._revoked
        return ("cert_fingerprint", ANY_ISSUER, fingerprint) in revoked or (
            "cert_serial", issuer_dn, serial_hex) in revoked

    def check(self, fingerprint: str, issuer_dn: str, serial_hex: str) -> CertificateStatus:
        replica = self.replica

        def registration() -> tuple[str | None, str | None, bool]:
            status = replica.base.certificates.check(fingerprint, issuer_dn, serial_hex)
            return status.principal, status.kind, status.principal_disabled

        principal, kind, disabled = replica.cached(replica._certs, fingerprint, registration)  # type: ignore[misc]
        return CertificateStatus(self.is_revoked(fingerprint, issuer_dn, serial_hex), principal, kind, disabled)


class _SigningKeys:
    def __init__(self, replica: Replica) -> None:
        self.replica = replica

    def active(self) -> IdentitySigningKey | None:
        self.replica.fresh()
        return self.replica._signing[0]

    def published(self) -> list[dict]:
        self.replica.fresh()
        now = time.time()
        return [jwk for until, jwk in self.replica._signing[1] if until is None or until > now]
