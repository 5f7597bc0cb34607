"""API keys: generation, rotation and revocation rules over any store.

A publishable key (``pk_…``) is for browser and mobile code, so never a secret: it must
name the origins it may be used from, and it is read-only by construction — it cannot
hold a scope the policy marks as writing (``authz.policy.writing``: the caller reads
the policy and passes what it says), and it belongs to a client, never to a user.

A secret key may also sign its requests (RFC 9421, ``authz.credentials.request_signing``):
created with an HMAC secret or a registered Ed25519 public key, which its rotated
successor keeps (the client signs on with the same material, under the new key id).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

from authz.admin.checks import check_name, check_tokens, parse_cidrs, parse_origins
from authz.credentials import apikeys
from authz.credentials.request_signing import SigningMaterial
from authz.store.errors import StoreError
from authz.store.interface import Store
from authz.store.records import ApiKeyRecord, NewApiKey


class KeyAdmin:
    def __init__(self, store: Store) -> None:
        self.store = store

    def create(self, principal: str, scopes: Iterable[str] = (), env: str = "live", allow_ips: Iterable[str] = (),
               expires_at: float | None = None, *, publishable: bool = False, origins: Iterable[str] = (),
               writing_scopes: Mapping[str, str] | None = None, on_anomaly: str = "allow",
               signing: SigningMaterial | None = None) -> tuple[ApiKeyRecord, str]:
        """Create a key (its principal as a client if new); returns (its record, the
        secret — to show once, never store).

        ``publishable``: a ``pk_`` key, used only from ``origins``; ``writing_scopes``
        (scope → why the policy says it writes, ``authz.policy.writing``) is then
        required as soon as it holds a scope, and none of its scopes may be among them.
        ``on_anomaly``: ``deny`` refuses the key while it has an anomaly nobody acknowledged.
        ``signing``: what the key signs its requests with (RFC 9421); a secret key only.
        """
        _check_on_anomaly(on_anomaly)
        if env not in apikeys.ENVIRONMENTS:
            raise StoreError(f"environment must be one of {', '.join(apikeys.ENVIRONMENTS)}")
        name, granted, networks = check_name(principal), check_tokens(scopes, "scope"), parse_cidrs(allow_ips)
        allowed_origins = parse_origins(origins)
        if publishable and signing is not None:
            raise StoreError("a publishable key is public (it ships in browser code): it cannot sign requests")
        if publishable:
            self._check_publishable(name, granted, allowed_origins, writing_scopes)
        elif allowed_origins:
            raise StoreError("origins restrict publishable keys only: create a publishable key to use them")
        key, secret = _new_key(name, granted, env, networks, time.time(), expires_at,
                               publishable=publishable, origins=allowed_origins, on_anomaly=on_anomaly,
                               signing=signing)
        if expires_at is not None and expires_at <= key.created_at:
            raise StoreError("expiry must be in the future")
        self.store.keys.insert(key)
        return self.get(key.id), secret

    def _check_publishable(self, principal: str, scopes: tuple[str, ...], origins: tuple[str, ...],
                           writing_scopes: Mapping[str, str] | None) -> None:
        if not origins:
            raise StoreError("a publishable key needs at least one origin it may be used from "
                             "(e.g. https://app.example.com)")
        if scopes and writing_scopes is None:
            raise StoreError("a publishable key's scopes must be checked against the policy: "
                             "which of them write is not known")
        for scope in scopes if writing_scopes is not None else ():
            if scope in writing_scopes:
                raise StoreError(f"scope {scope!r} writes ({writing_scopes[scope]}) and a publishable key is "
                                 "read-only: grant it a scope that only routes limited to GET, HEAD or OPTIONS "
                                 "require")
        if self.store.principals.find_user(principal) is not None:
            raise StoreError(f"{principal!r} is a user: a publishable key is public, so it may only "
                             "belong to a client (an application), never act as a person")

    def get(self, key_id: str) -> ApiKeyRecord:
        record = self.store.keys.get(key_id)
        if record is None:
            raise StoreError(f"no API key with id {key_id!r}")
        return record

    def list(self, principal: str | None = None) -> list[ApiKeyRecord]:
        return self.store.keys.list(principal)

    def expiring(self, within: float, now: float | None = None) -> list[ApiKeyRecord]:
        """Keys that stop working within ``within`` seconds, soonest first: active keys
        reaching their expiry, and deprecated ones (rotated) whose grace period ends.
        Revoked and already expired keys are not listed."""
        if within <= 0:
            raise StoreError("the span must be positive, e.g. 14d")
        now = time.time() if now is None else now
        return self.store.keys.expiring(now, now + within)

    def revoke(self, key_id: str) -> ApiKeyRecord:
        if not self.store.keys.revoke(key_id, time.time()):
            raise StoreError(f"no API key with id {key_id!r}")
        return self.get(key_id)

    def set_on_anomaly(self, key_id: str, on_anomaly: str) -> ApiKeyRecord:
        """``deny``: refuse the key while it has an anomaly nobody acknowledged; ``allow``: only report."""
        _check_on_anomaly(on_anomaly)
        if not self.store.keys.set_on_anomaly(key_id, on_anomaly):
            raise StoreError(f"no API key with id {key_id!r}")
        return self.get(key_id)

    def rotate(self, key_id: str, grace_seconds: float) -> tuple[ApiKeyRecord, ApiKeyRecord, str]:
        """Issue a successor with the same principal, scopes, IPs, lifetime, kind, on-anomaly
        (a publishable key's successor is publishable, with the same origins).

        The old key becomes ``deprecated`` and stays valid until the grace period ends
        (or its own expiry, whichever is first). Returns (old, new, secret).
        """
        if grace_seconds < 0:
            raise StoreError("grace must not be negative")
        now = time.time()
        old = self.get(key_id)
        _check_rotatable(old, now)
        match = self.store.keys.find_by_id(key_id)
        signing = None if match is None or match.signing_alg is None or match.signing_key is None \
            else SigningMaterial(match.signing_alg, match.signing_key)
        new_expiry = None if old.expires_at is None else now + (old.expires_at - old.created_at)
        new, secret = _new_key(old.principal, old.scopes, old.env, old.allow_ips, now, new_expiry,
                               rotated_from=key_id, publishable=old.publishable, origins=old.origins,
                               on_anomaly=old.on_anomaly, signing=signing)
        old_expiry = now + grace_seconds if old.expires_at is None else min(old.expires_at, now + grace_seconds)
        if not self.store.keys.replace(key_id, new, old_expiry):
            _check_rotatable(self.get(key_id), now)  # changed meanwhile: say how
            raise StoreError(f"{key_id} changed during the rotation: try again")
        return self.get(key_id), self.get(new.id), secret


def _new_key(principal: str, scopes: tuple[str, ...], env: str, allow_ips: tuple[str, ...], now: float,
             expires_at: float | None, rotated_from: str | None = None, publishable: bool = False,
             origins: tuple[str, ...] = (), on_anomaly: str = "allow", signing: SigningMaterial | None = None
             ) -> tuple[NewApiKey, str]:
    secret = apikeys.generate(env, publishable)
    return NewApiKey(id=apikeys.new_key_id(), principal=principal, fingerprint=apikeys.fingerprint(secret),
                     display=apikeys.display(secret), env=env, scopes=scopes, allow_ips=allow_ips, created_at=now,
                     expires_at=expires_at, rotated_from=rotated_from, publishable=publishable,
                     origins=origins, on_anomaly=on_anomaly, signing_alg=signing and signing.alg,
                     signing_key=signing and signing.stored), secret


ON_ANOMALY = ("allow", "deny")


def _check_on_anomaly(value: str) -> None:
    if value not in ON_ANOMALY:
        raise StoreError(f"on-anomaly must be one of {', '.join(ON_ANOMALY)}, not {value!r}")


def _check_rotatable(key: ApiKeyRecord, now: float) -> None:
    if key.status == "revoked":
        raise StoreError(f"{key.id} is revoked: create a new key instead")
    if key.replaced_by:
        raise StoreError(f"{key.id} was already rotated to {key.replaced_by}: rotate that key")
    if key.expires_at is not None and key.expires_at <= now:
        raise StoreError(f"{key.id} has expired: create a new key instead")
