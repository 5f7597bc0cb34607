"""``basic``: HTTP Basic (RFC 7617) against users in the credential store.

Verifying an Argon2id hash costs tens of milliseconds, so each worker remembers
successful verifications. The cache key is an HMAC of the user, the password and
the *stored hash*: a password change misses the cache at once, and disabling is read
from the user row on every request. A wrong password is remembered the same way for a
minute (keyed on the stored hash, so it can never stand for a right one), so a client
repeating a stale password costs no KDF; unknown users cost as much time as known ones. KDF runs are bounded per worker
(``authz.authenticators.password_guard``): repeated failures per user name and per client address are
refused before the KDF (401 ``credentials_invalid``), and verifications never queue.
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
import time

from authz.authenticators.base import AUTHORIZATION, Authenticator, Context, quote
from authz.authenticators.cache import secret_key
from authz.credentials import passwords
from authz.decision import Identity, IdentityKind, Outcome, Reason
from authz.observability import metrics
from authz.request import CheckRequest

log = logging.getLogger("authz.basic")
SLOT = AUTHORIZATION.name
MAX_CREDENTIALS = 4096
CACHE_SECONDS = 300.0
WRONG_SECONDS = 60.0
_BAD = "invalid user name or password"
_BUSY = "too many password checks at once in this worker; try again"
_THROTTLED = "too many failed password attempts for this user name or client address; try again later"
# How long a request waits for the same user's identical verification already running in
# this worker (one KDF run, ~40 ms), rather than starting its own or being refused busy.
JOIN_SECONDS = 2.0


class BasicAuthenticator(Authenticator):
    type = "basic"
    slots = (AUTHORIZATION,)

    def __init__(self, name: str, config: dict, context: Context) -> None:
        super().__init__(name, config, context)
        self.realm = config.get("realm", name)
        self.cache = context.cache("basic")
        self.wrong = context.cache("basic-wrong")  # its own bound: guesses never evict good logins
        # Verifications in flight in this worker, by cache key: when a user's cache entry
        # expires under load, the concurrent requests wait for the one KDF run instead of
        # each asking for a KDF slot (and being refused "busy" when none is free).
        self._inflight: dict[bytes, threading.Event] = {}
        self._inflight_lock = threading.Lock()

    def authenticate(self, request: CheckRequest) -> Outcome:
        header = request.headers.get(SLOT)
        if not header:
            return Outcome.absent()
        scheme, _, param = header.strip().partition(" ")
        if scheme.lower() != "basic":
            return Outcome.absent()
        param = param.strip()
        if len(param) > MAX_CREDENTIALS:
            return Outcome.invalid(SLOT, "Basic credentials too long")
        try:
            text = base64.b64decode(param, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return Outcome.invalid(SLOT, "malformed Basic credentials (base64 of UTF-8 user:password)")
        user, colon, password = text.partition(":")
        if not colon:
            return Outcome.invalid(SLOT, "malformed Basic credentials (no ':' after the user name)")
        if not user:
            return Outcome.invalid(SLOT, "empty user name")
        if not user.isprintable():
            return Outcome.invalid(SLOT, "control characters in the user name")

        record = self.context.store.principals.find_user(user)
        known = record is not None and bool(record.password_hash)
        key = secret_key(user, record.password_hash, password) if known else None
        if key is None or self.cache.get(key) is None:
            return self._verify(request, user, password, record, known, key)
        return self._identity(user, record)

    def _verify(self, request: CheckRequest, user: str, password: str, record, known: bool,
                key: bytes | None) -> Outcome:
        """A KDF run (or a refusal before one); the answer is remembered either way."""
        if key is not None:
            with self._inflight_lock:
                running = self._inflight.get(key)
                if running is None:
                    self._inflight[key] = threading.Event()
            if running is not None:  # the same verification is running: its answer lands in the cache
                running.wait(JOIN_SECONDS)
                if self.cache.get(key) is not None:
                    return self._identity(user, record)
                return self._verify_unjoined(request, user, password, record, known)
            try:
                return self._verify_unjoined(request, user, password, record, known)
            finally:
                with self._inflight_lock:
                    event = self._inflight.pop(key, None)
                if event is not None:
                    event.set()
        return self._verify_unjoined(request, user, password, record, known)

    def _verify_unjoined(self, request: CheckRequest, user: str, password: str, record, known: bool) -> Outcome:
        # The same wrong password again (a client still sending an old one): known to
        # be wrong for this stored hash, so no KDF run and no budget spent.
        wrong_key = secret_key("wrong", user, record.password_hash if known else "", password)
        if self.wrong.get(wrong_key) is not None:
            return Outcome.invalid(SLOT, _BAD)
        # A KDF run: bounded per worker (see authz.authenticators.password_guard), refused before the
        # KDF for known and unknown users alike.
        guard = self.context.password_guard
        address = str(request.client_ip or "")
        spent = guard.allowed(user, address)
        if spent is not None:
            metrics.password_throttled(spent)
            return Outcome.invalid(SLOT, _THROTTLED)
        clean = guard.begin(user, address)  # counted as a failure until it succeeds
        with guard.slot(clean=clean) as free:
            if not free:
                guard.settle(user, address, succeeded=False)  # never attempted
                metrics.password_throttled("busy")
                return Outcome.invalid(SLOT, _BUSY)
            if not known:
                passwords.burn_verification_time(password)
                ok = False
            else:
                ok = passwords.verify_password(password, record.password_hash)
        if not ok:
            self.wrong.set(wrong_key, True, time.time() + WRONG_SECONDS)
            return Outcome.invalid(SLOT, _BAD)
        guard.settle(user, address, succeeded=True)
        stored = self._upgrade(user, password, record.password_hash)
        self.cache.set(secret_key(user, stored, password), True, time.time() + CACHE_SECONDS)
        return self._identity(user, record)

    def _identity(self, user: str, record) -> Outcome:
        # Checked after the password so the answer does not reveal account state.
        if record.disabled:
            return Outcome.invalid(SLOT, f"user {user} is disabled", Reason.CREDENTIAL_REVOKED)
        return Outcome.valid(SLOT, Identity(
            id=user, kind=IdentityKind.USER, method=self.type, authenticator=self.name,
            scopes=record.scopes, roles=record.roles,
        ))

    def _upgrade(self, user: str, password: str, stored: str) -> str:
        """Replace an imported bcrypt (or weaker Argon2id) hash now that we know the password."""
        if not passwords.needs_rehash(stored):
            return stored
        new = passwords.hash_password(password)
        try:
            if self.context.store.principals.set_password(user, new, expected_old=stored):
                log.info("upgraded the password hash of user %s to Argon2id", user)
                return new
        except Exception:
            log.warning("could not upgrade the password hash of user %s", user, exc_info=True)
        return stored

    def challenge(self, outcome: Outcome | None = None) -> str | None:
        return f'Basic realm={quote(self.realm)}, charset="UTF-8"'
