"""API keys: generation, rotation and revocation rules over any store."""

from __future__ import annotations

import time
from collections.abc import Iterable

from authz.admin.checks import check_name, check_tokens, parse_cidrs
from authz.credentials import apikeys
from authz.store.errors import StoreError
from authz.store.interface import Store
from authz.store.records import ApiKeyRecord, NewApiKey


class KeyAdmin:
    def __init__(self, store: Store) -> None:
        self.store = store

    def create(self, principal: str, scopes: Iterable[str] = (), env: str = "live", allow_ips: Iterable[str] = (),
               expires_at: float | None = None) -> tuple[ApiKeyRecord, str]:
        """Create a key (its principal as a client if new); returns (its record, the
        secret — to show once, never store)."""
        if env not in apikeys.ENVIRONMENTS:
            raise StoreError(f"environment must be one of {', '.join(apikeys.ENVIRONMENTS)}")
        key, secret = _new_key(check_name(principal), check_tokens(scopes, "scope"), env, parse_cidrs(allow_ips),
                               time.time(), expires_at)
        if expires_at is not None and expires_at <= key.created_at:
            raise StoreError("expiry must be in the future")
        self.store.keys.insert(key)
        return self.get(key.id), secret

    def get(self, key_id: str) -> ApiKeyRecord:
        record = self.store.keys.get(key_id)
        if record is None:
            raise StoreError(f"no API key with id {key_id!r}")
        return record

    def list(self, principal: str | None = None) -> list[ApiKeyRecord]:
        return self.store.keys.list(principal)

    def revoke(self, key_id: str) -> ApiKeyRecord:
        if not self.store.keys.revoke(key_id, time.time()):
            raise StoreError(f"no API key with id {key_id!r}")
        return self.get(key_id)

    def rotate(self, key_id: str, grace_seconds: float) -> tuple[ApiKeyRecord, ApiKeyRecord, str]:
        """Issue a successor with the same principal, scopes, IPs and lifetime.

        The old key becomes ``deprecated`` and stays valid until the grace period ends
        (or its own expiry, whichever is first). Returns (old, new, secret).
        """
        if grace_seconds < 0:
            raise StoreError("grace must not be negative")
        now = time.time()
        old = self.get(key_id)
        _check_rotatable(old, now)
        new_expiry = None if old.expires_at is None else now + (old.expires_at - old.created_at)
        new, secret = _new_key(old.principal, old.scopes, old.env, old.allow_ips, now, new_expiry,
                               rotated_from=key_id)
        old_expiry = now + grace_seconds if old.expires_at is None else min(old.expires_at, now + grace_seconds)
        if not self.store.keys.replace(key_id, new, old_expiry):
            _check_rotatable(self.get(key_id), now)  # changed meanwhile: say how
            raise StoreError(f"{key_id} changed during the rotation: try again")
        return self.get(key_id), self.get(new.id), secret


def _new_key(principal: str, scopes: tuple[str, ...], env: str, allow_ips: tuple[str, ...], now: float,
             expires_at: float | None, rotated_from: str | None = None) -> tuple[NewApiKey, str]:
    secret = apikeys.generate(env)
    return NewApiKey(id=apikeys.new_key_id(), principal=principal, fingerprint=apikeys.fingerprint(secret),
                     display=apikeys.display(secret), env=env, scopes=scopes, allow_ips=allow_ips, created_at=now,
                     expires_at=expires_at, rotated_from=rotated_from), secret


def _check_rotatable(key: ApiKeyRecord, now: float) -> None:
    if key.status == "revoked":
        raise StoreError(f"{key.id} is revoked: create a new key instead")
    if key.replaced_by:
        raise StoreError(f"{key.id} was already rotated to {key.replaced_by}: rotate that key")
    if key.expires_at is not None and key.expires_at <= now:
        raise StoreError(f"{key.id} has expired: create a new key instead")
