"""A store for dry runs (``authz policy explain --as-key/--as-user``): it answers like the
store underneath, except that a stand-in secret resolves to a chosen key and a stand-in
password to a chosen user, and it records no key's last use or usage (a dry run is no
use), sends no webhook event (nothing happened) and keeps a DPoP proof's jti for the dry
run only. Nothing is written for the stand-ins; the store underneath is never modified."""

from __future__ import annotations

import dataclasses
import secrets
import time

from authz.credentials import apikeys, passwords
from authz.store.errors import StoreError
from authz.store.interface import ApiKeyLookup, LastUseRecorder, Store, UserLookup
from authz.store.records import ApiKeyMatch, UserCredentials


class _NoLastUse:
    def record(self, key_id: str) -> None:
        pass

    def count(self, key_id: str, allowed: bool, client_ip, route: str | None, deprecated: bool) -> None:
        pass

    def flush(self) -> None:
        pass


class _DryRunNonces:
    """One-time values seen by this dry run alone: explaining a request with a DPoP proof
    neither spends the proof's jti in the store nor reads whether it was spent."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], float] = {}

    def first_use(self, scope: str, value: str, expires_at: float) -> bool:
        if self.seen.get((scope, value), float("-inf")) > time.time():
            return False
        self.seen[(scope, value)] = expires_at
        return True


class _NoEvents:
    """The outbox of a dry run: what a decision would announce is dropped."""

    def enqueue(self, events: list) -> int:
        return 0


class _Keys:
    def __init__(self, base: ApiKeyLookup) -> None:
        self.base = base
        self.stand_ins: dict[str, ApiKeyMatch] = {}

    def find(self, fingerprint: str) -> ApiKeyMatch | None:
        match = self.stand_ins.get(fingerprint)
        return match if match is not None else self.base.find(fingerprint)


class _Users:
    def __init__(self, base: UserLookup) -> None:
        self.base = base
        self.stand_ins: dict[str, UserCredentials] = {}

    def find_user(self, name: str) -> UserCredentials | None:
        user = self.stand_ins.get(name)
        return user if user is not None else self.base.find_user(name)

    def set_password(self, name: str, password_hash: str, *, expected_old: str | None = None) -> bool:
        if name in self.stand_ins:
            return False  # the stand-in's hash is current: nothing to upgrade, nothing to write
        return self.base.set_password(name, password_hash, expected_old=expected_old)


class StandInStore:
    """Implements ``ServingStore`` over ``base``, with stand-in credentials."""

    def __init__(self, base: Store) -> None:
        self.base = base
        self.keys = _Keys(base.keys)
        self.principals = _Users(base.principals)
        self.last_used: LastUseRecorder = base.last_used
        self.revocations = base.revocations
        self.certificates = base.certificates
        self.nonces = _DryRunNonces()
        self.signing_keys = base.signing_keys
        self.policy_snapshots = base.policy_snapshots
        self.outbox = _NoEvents()

    @property
    def location(self) -> str:
        return self.base.location

    def check_ready(self) -> None:
        self.base.check_ready()

    def problem(self) -> str | None:
        return self.base.problem()

    def close(self) -> None:
        """Nothing: the store underneath is its owner's to close."""

    def stand_in_key(self, key_id: str) -> str:
        """A fresh secret that this store resolves to key ``key_id`` (as it is stored:
        status, expiry, IPs and principal all apply). Last uses are no longer recorded."""
        match = self.base.keys.find_by_id(key_id)
        if match is None:
            raise StoreError(f"no API key with id {key_id!r}")
        secret = apikeys.generate(match.env, match.publishable)
        fingerprint = apikeys.fingerprint(secret)
        self.keys.stand_ins[fingerprint] = dataclasses.replace(match, hash=fingerprint)
        self.last_used = _NoLastUse()
        return secret

    def stand_in_user(self, name: str) -> str:
        """A fresh password that this store accepts for user ``name`` (disabled users stay disabled)."""
        user = self.principals.base.find_user(name)
        if user is None:
            raise StoreError(f"no user named {name!r}")
        password = secrets.token_urlsafe(16)
        self.principals.stand_ins[name] = dataclasses.replace(user, password_hash=passwords.hash_password(password))
        return password
