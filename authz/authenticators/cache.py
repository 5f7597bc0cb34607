"""A small bounded cache with per-entry expiry, for results that are costly to recompute.

Callers build keys from everything that decides the answer (the stored hash, the
whole token, the trust configuration), so a changed input simply misses and nothing
ever has to be flushed. Keys that derive from secrets are HMACs under a per-process
random key (``secret_key``), so a memory dump shows no reusable value.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from typing import Generic, TypeVar

from authz.observability import metrics

V = TypeVar("V")

_PROCESS_KEY = os.urandom(32)


def secret_key(*parts: bytes | str) -> bytes:
    """An opaque cache key for inputs that include secrets (keyed BLAKE2b, a MAC)."""
    mac = hashlib.blake2b(key=_PROCESS_KEY, digest_size=32)
    for part in parts:
        _absorb(mac, part)
    return mac.digest()


class SecretKeyer:
    """``secret_key(prefix…, part)`` with the fixed prefix absorbed once (the hot path
    hashes only the per-request part)."""

    def __init__(self, *prefix: bytes | str) -> None:
        self._base = hashlib.blake2b(key=_PROCESS_KEY, digest_size=32)
        for part in prefix:
            _absorb(self._base, part)

    def __call__(self, part: bytes | str) -> bytes:
        mac = self._base.copy()
        _absorb(mac, part)
        return mac.digest()


def _absorb(mac, part: bytes | str) -> None:
    data = part.encode("utf-8", "surrogateescape") if isinstance(part, str) else part
    mac.update(len(data).to_bytes(4, "big"))
    mac.update(data)


class TTLCache(Generic[V]):
    """LRU cache of at most ``max_entries``; an entry is dropped at its own expiry."""

    def __init__(self, name: str, max_entries: int = 10_000) -> None:
        self.name = name
        self.max_entries = max_entries
        self._entries: OrderedDict[object, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: object, now: float | None = None) -> V | None:
        entry = self._entries.get(key)
        if entry is not None:
            if entry[0] > (time.time() if now is None else now):
                metrics.cache(self.name, True)
                return entry[1]
            with self._lock:
                self._entries.pop(key, None)
        metrics.cache(self.name, False)
        return None

    def set(self, key: object, value: V, expires_at: float) -> None:
        with self._lock:
            self._entries[key] = (expires_at, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
