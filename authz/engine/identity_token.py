"""X-Auth-Token: a short-lived JWT in which authz vouches for the decision, so an
upstream can verify who the caller is (with nothing but ``/.well-known/jwks.json``
and a JWT library) instead of trusting a plain header.

Claims: ``iss`` (AUTHZ_ISSUER), ``sub`` (the principal; absent for anonymous routes),
``iat``/``nbf``/``exp`` (lifetime AUTHZ_IDENTITY_TOKEN_TTL, at most 300 s), ``jti``,
``route``, ``methods``, ``scope``, ``identities`` (id, kind, method of each layer), and
``cnf.jkt`` when the principal proved possession of a key with a DPoP proof (RFC 9449:
the key's RFC 7638 thumbprint, so an upstream can hold its own checks to the same key).
Signed EdDSA (Ed25519) with ``kid`` set.
"""

from __future__ import annotations

import secrets
import threading
import time

import jwt
from cryptography.hazmat.primitives import serialization

from authz.decision import Decision
from authz.store.interface import ServingStore
from authz.store.records import IdentitySigningKey

MAX_TTL = 300.0
KEY_REFRESH = 10.0  # seconds a worker may keep signing with a key after its rotation
SKEW = 60.0


def keep_retired_for(ttl: float) -> float:
    """How long a rotated-out key must stay published: past every token it signed."""
    return KEY_REFRESH + ttl + SKEW


class IdentitySigner:
    def __init__(self, store: ServingStore, issuer: str, ttl: float = 60.0, audience: str | None = None) -> None:
        self.store = store
        self.issuer = issuer
        self.ttl = min(float(ttl), MAX_TTL)
        self.audience = audience
        self._current: tuple[IdentitySigningKey, object] | None = None  # the key and its loaded private key
        self._checked = 0.0
        self._lock = threading.Lock()

    def _active(self) -> tuple[IdentitySigningKey, object]:
        now = time.monotonic()
        current = self._current
        if current is None or now - self._checked >= KEY_REFRESH:
            with self._lock:
                key = self.store.signing_keys.active()
                if key is None:
                    raise RuntimeError("no signing key: run `authz signing-keys rotate`")
                if current is None or key.kid != current[0].kid:  # load a PEM once, not every refresh
                    current = key, serialization.load_pem_private_key(key.private_pem.encode(), password=None)
                    self._current = current
                self._checked = now
        return current

    def sign(self, decision: Decision) -> str:
        key, private_key = self._active()
        now = int(time.time())
        claims: dict = {
            "iss": self.issuer, "iat": now, "nbf": now, "exp": now + int(self.ttl), "jti": secrets.token_urlsafe(12),
            "route": decision.route, "methods": decision.methods, "scope": " ".join(decision.scopes),
            "identities": [{"id": i.id, "kind": str(i.kind), "method": i.method} for i in decision.identities],
        }
        principal = decision.principal
        if principal is not None:
            claims["sub"] = principal.id
            if principal.jkt is not None:
                claims["cnf"] = {"jkt": principal.jkt}
        if self.audience:
            claims["aud"] = self.audience
        return jwt.encode(claims, private_key, algorithm=key.algorithm, headers={"kid": key.kid, "typ": "JWT"})

    def jwks(self) -> dict:
        return {"keys": self.store.signing_keys.published()}
