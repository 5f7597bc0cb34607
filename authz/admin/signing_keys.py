"""authz's own signing keys (Ed25519) for the X-Auth-Token identity JWT: generation and
rotation. A retired key stops signing at once and stays in the published JWKS until
``publish_until``, past the expiry of anything it signed."""

from __future__ import annotations

import json
import secrets
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from authz.store.interface import Store
from authz.store.records import NewIdentitySigningKey, SigningKeyRecord, SigningKeyRotation

ALGORITHM = "EdDSA"


def generate(now: float) -> NewIdentitySigningKey:
    """A fresh Ed25519 key with its ``kid``, PKCS#8 PEM and public JWK."""
    private = ed25519.Ed25519PrivateKey.generate()
    kid = "authz-" + secrets.token_hex(8)
    jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(private.public_key()))
    jwk.update({"kid": kid, "alg": ALGORITHM, "use": "sig"})
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return NewIdentitySigningKey(kid, ALGORITHM, pem, jwk, now)


class SigningKeyAdmin:
    def __init__(self, store: Store) -> None:
        self.store = store

    def rotate(self, keep_old_for: float) -> SigningKeyRotation:
        """Sign with a new key from now on; the previous one stays published ``keep_old_for`` seconds."""
        key = generate(time.time())
        retired = self.store.signing_keys.install(key, key.created_at + keep_old_for)
        return SigningKeyRotation(key.kid, key.algorithm, key.created_at, tuple(retired),
                                  key.created_at + keep_old_for if retired else None)

    def ensure(self, keep_old_for: float) -> None:
        """A signing key, unless there is one already."""
        if self.store.signing_keys.active() is None:
            self.rotate(keep_old_for)

    def list(self) -> list[SigningKeyRecord]:
        return self.store.signing_keys.list()
