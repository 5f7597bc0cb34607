"""Bounded password-verification work per worker.

An Argon2id verification costs tens of milliseconds of CPU; without a bound, a flood
of wrong passwords takes every core from every other credential. Each worker
therefore:

- refuses a password check *before* the KDF once the user name or the client address
  has used up its failure budget (``AUTHZ_PASSWORD_USER_FAILURES`` /
  ``AUTHZ_PASSWORD_ADDRESS_FAILURES`` failures per minute, a token bucket refilled
  evenly over the minute) — answered 401 ``credentials_invalid`` like any wrong
  password, for known and unknown user names alike (no enumeration);
- runs at most ``AUTHZ_KDF_CONCURRENCY`` verifications at once, and refuses rather
  than queues beyond that, so no check ever waits behind an attacker's; one of those
  slots is kept for *clean* attempts — a user name and a client address with no failure
  on record — so that a flood from addresses that already failed cannot keep another
  user's first login out. (A flood whose every request comes from a new address with a
  new name looks clean too: the per-worker concurrency cap is then the only bound.)

Successful logins already verified are served from the Basic cache without a KDF
run, so they pass even while the user's or the address's budget is spent; a success
refills the user's budget. Budgets are per worker (N workers allow N times as many).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

MAX_TRACKED = 10_000  # names and addresses remembered per worker (least recently used go first)


class _Buckets:
    """Token buckets by key: ``capacity`` failures, refilled over ``window`` seconds."""

    def __init__(self, capacity: float, window: float) -> None:
        self.capacity = float(capacity)
        self.rate = self.capacity / window
        self._state: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _tokens(self, key: str, now: float) -> float:
        entry = self._state.get(key)
        if entry is None:
            return self.capacity
        tokens, at = entry
        return min(self.capacity, tokens + (now - at) * self.rate)

    def has(self, key: str, now: float) -> bool:
        return self._tokens(key, now) >= 1.0

    def full(self, key: str, now: float) -> bool:
        return key not in self._state or self._tokens(key, now) >= self.capacity

    def take(self, key: str, now: float) -> None:
        self._state[key] = (max(self._tokens(key, now) - 1.0, 0.0), now)
        self._state.move_to_end(key)
        while len(self._state) > MAX_TRACKED:
            self._state.popitem(last=False)

    def reset(self, key: str) -> None:
        self._state.pop(key, None)

    def give_back(self, key: str, now: float) -> None:
        if key in self._state:
            self._state[key] = (min(self._tokens(key, now) + 1.0, self.capacity), now)


class PasswordGuard:
    def __init__(self, user_failures: int = 10, address_failures: int = 30, concurrency: int = 2,
                 window: float = 60.0) -> None:
        self.users = _Buckets(user_failures, window)
        self.addresses = _Buckets(address_failures, window)
        concurrency = max(1, concurrency)
        self._slots = threading.BoundedSemaphore(max(1, concurrency - 1))
        # The reserved slot (none when concurrency is 1: the cap comes first).
        self._clean_slot = threading.BoundedSemaphore(1) if concurrency > 1 else None
        self._lock = threading.Lock()

    def allowed(self, user: str, address: str) -> str | None:
        """None if a KDF run may be spent on this attempt, else which budget is spent."""
        user = _name(user)
        now = time.monotonic()
        with self._lock:
            if not self.users.has(user, now):
                return "user"
            if not self.addresses.has(address, now):
                return "address"
        return None

    def failed(self, user: str, address: str) -> None:
        with self._lock:
            self._charge(_name(user), address, time.monotonic())

    def _charge(self, name: str, address: str, now: float) -> None:
        self.users.take(name, now)
        self.addresses.take(address, now)

    def _clean(self, name: str, address: str, now: float) -> bool:
        return self.users.full(name, now) and self.addresses.full(address, now)

    def clean(self, user: str, address: str) -> bool:
        """No failure on record for this user name nor this client address."""
        with self._lock:
            return self._clean(_name(user), address, time.monotonic())

    def begin(self, user: str, address: str) -> bool:
        """Charge an attempt as a failure before its KDF run, so that attempts running at
        the same time already count (a burst from a new address is not "clean" for long:
        only its first attempt is); returns whether the attempt was clean. ``settle``
        gives the charge back when the attempt succeeds or never ran."""
        name = _name(user)
        now = time.monotonic()
        with self._lock:
            clean = self._clean(name, address, now)
            self._charge(name, address, now)
        return clean

    def settle(self, user: str, address: str, succeeded: bool) -> None:
        """After ``begin``: a success refills the user's budget and gives the address its
        token back; an attempt refused for a busy slot gives both back."""
        name = _name(user)
        now = time.monotonic()
        with self._lock:
            if succeeded:
                self.users.reset(name)
            else:
                self.users.give_back(name, now)
            self.addresses.give_back(address, now)

    @contextmanager
    def slot(self, clean: bool = False) -> Iterator[bool]:
        """A verification slot, or False at once when all are busy (never a queue);
        ``clean`` attempts may also take the reserved slot."""
        held = self._slots if self._slots.acquire(blocking=False) else None
        if held is None and clean and self._clean_slot is not None and self._clean_slot.acquire(blocking=False):
            held = self._clean_slot
        try:
            yield held is not None
        finally:
            if held is not None:
                held.release()


def _name(user: str) -> str:
    """User names are up to kilobytes long: remember a digest, not the name."""
    return hashlib.blake2b(user.encode(), digest_size=16).hexdigest()
