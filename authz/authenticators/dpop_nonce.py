"""DPoP server nonces (RFC 9449 §9): stateless, so every worker and replica accepts them.

A route whose leaf says ``"dpop_nonce": "required"`` takes a proof only with a ``nonce``
claim this service handed out recently (``DPoP-Nonce``). A proof without one, or with a
stale or foreign one, is refused with ``error="use_dpop_nonce"`` and a fresh nonce, and
the client retries with it (§8.2). That bounds how long a proof made in advance (by
malware holding the key for a moment) stays usable to the nonce's lifetime, whatever
``iat`` it claims.

Nothing is stored: a nonce is a time slot and a MAC over it,
``base64url(slot (4 bytes, big-endian) || HMAC-SHA256(K, label || lifetime || slot)[:16])``,
27 characters. A nonce is good during its slot and the next (``lifetime`` to twice that;
one nonce per slot is handed to every client alike). K is derived with HKDF-SHA256
(``cryptography``) from the private key of the active X-Auth-Token signing key, which every
worker and replica already reads from the store (``authz signing-keys rotate``) and keeps
in memory: no store round trip per request, no new secret to distribute. Each process
re-reads the active key every ``KEY_REFRESH`` seconds, like the identity signer; a
rotation invalidates the nonces handed out before it, and for those seconds a nonce made by
a process that has the new key is refused by one that has not yet: the client is told
``use_dpop_nonce`` with a nonce again, which is what the RFC provides for. Nonces carry no
secret and say nothing about the client; the MAC is compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import threading
import time

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from jwt.utils import base64url_decode, base64url_encode

from authz.store.interface import SigningKeySource

LABEL = b"authz dpop nonce v1"
DEFAULT_LIFETIME = 300.0  # seconds per slot: a nonce is good for 300 to 600 s
MAC_BYTES = 16
NONCE_LENGTH = 27  # base64url of 4 + 16 bytes, unpadded
USE_NONCE = "use_dpop_nonce"
KEY_REFRESH = 10.0  # as engine/identity_token.py: how long a process keeps a key before re-reading


class NoNonceKey(RuntimeError):
    """There is no signing key to derive the nonce key from: deny (never allow without)."""


class NonceMinter:
    """Mints the current nonce and checks a presented one, from the shared signing key."""

    def __init__(self, keys: SigningKeySource, lifetime: float = DEFAULT_LIFETIME) -> None:
        self.keys = keys
        self.lifetime = float(lifetime)
        self._key: tuple[str, bytes] | None = None  # (kid, derived nonce key)
        self._checked = float("-inf")
        self._lock = threading.Lock()
        self._minted: dict[tuple[bytes, int], str] = {}  # (key, slot) -> nonce: at most a few entries

    def current(self, now: float | None = None) -> str:
        """The nonce to hand out now."""
        return self.for_slot(self._slot(now))

    def valid(self, nonce: object, now: float | None = None) -> bool:
        """Whether ``nonce`` is one this service handed out in this slot or the previous one."""
        if not isinstance(nonce, str) or len(nonce) != NONCE_LENGTH or not nonce.isascii():
            return False
        try:
            (slot,) = struct.unpack(">I", base64url_decode(nonce)[:4])
        except (ValueError, struct.error):
            return False
        now_slot = self._slot(now)
        if slot not in (now_slot, now_slot - 1):
            return False
        return hmac.compare_digest(self.for_slot(slot), nonce)

    def for_slot(self, slot: int) -> str:
        key = self._derived()
        memo = (key, slot)
        nonce = self._minted.get(memo)
        if nonce is None:
            message = LABEL + struct.pack(">dI", self.lifetime, slot)
            mac = hmac.new(key, message, hashlib.sha256).digest()[:MAC_BYTES]
            nonce = base64url_encode(struct.pack(">I", slot) + mac).decode("ascii")
            if len(self._minted) >= 8:
                self._minted.clear()
            self._minted[memo] = nonce
        return nonce

    def _slot(self, now: float | None) -> int:
        return int((time.time() if now is None else now) // self.lifetime) & 0xFFFFFFFF

    def _derived(self) -> bytes:
        """The nonce key, derived once per signing key, the active key re-read every
        ``KEY_REFRESH`` seconds (from memory on a replica)."""
        now = time.monotonic()
        current = self._key
        if current is None or now - self._checked >= KEY_REFRESH:
            with self._lock:
                active = self.keys.active()
                if active is None:
                    raise NoNonceKey("DPoP nonces need a signing key: run `authz signing-keys rotate`")
                if current is None or current[0] != active.kid:
                    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=LABEL).derive(
                        active.private_pem.encode())
                    current = self._key = (active.kid, derived)
                self._checked = now
        return current[1]
