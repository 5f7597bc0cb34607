"""The material an API key signs requests with (RFC 9421): made or read once by the
operator (``authz keys create --signing hmac-sha256`` / ``--signing-public-key FILE``),
stored with the key, and turned into a verification key on the hot path.

Two algorithms, one per kind of material:

- ``ed25519`` (recommended): the client keeps the private key and authz holds only the
  public one (SPKI PEM), so nothing authz stores lets anyone sign.
- ``hmac-sha256``: authz generates a 256-bit secret and prints it once. Verifying an
  HMAC needs the secret itself, so it cannot be stored hashed as the API key is: it is
  stored as it is, as the store keeps authz's own signing keys (``signing_keys.
  private_pem``, ``authz.admin.signing_keys``). Whoever reads the store can sign for
  that key; prefer Ed25519 where the client can hold a key pair.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, field
from functools import lru_cache

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

HMAC_SHA256 = "hmac-sha256"
ED25519 = "ed25519"
ALGORITHMS = (HMAC_SHA256, ED25519)
HMAC_SECRET_BYTES = 32  # RFC 2104 §3: at least the hash's length
MAX_PEM_BYTES = 4096


class SigningMaterialError(ValueError):
    """Material that cannot sign requests for a key (one line, for the CLI)."""


@dataclass(frozen=True, slots=True)
class SigningMaterial:
    """A key's signing algorithm and what the store keeps for it."""

    alg: str
    stored: str = field(repr=False)


def new_hmac() -> tuple[SigningMaterial, str]:
    """A fresh HMAC-SHA256 secret: (what to store, the secret to show the operator once,
    base64 as RFC 9421's own example secret is written)."""
    secret = base64.b64encode(secrets.token_bytes(HMAC_SECRET_BYTES)).decode("ascii")
    return SigningMaterial(HMAC_SHA256, secret), secret


def ed25519_public(pem: bytes) -> SigningMaterial:
    """A registered Ed25519 public key (PEM); any other key, or a private key, refused."""
    if len(pem) > MAX_PEM_BYTES:
        raise SigningMaterialError(f"the public key file is longer than {MAX_PEM_BYTES} bytes")
    if b"PRIVATE KEY" in pem:
        raise SigningMaterialError("this is a private key: register the public key only "
                                   "(openssl pkey -in key.pem -pubout)")
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError):
        raise SigningMaterialError("not a PEM public key (-----BEGIN PUBLIC KEY-----)") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise SigningMaterialError(f"only Ed25519 public keys sign requests, not {type(key).__name__.lstrip('_')}")
    spki = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return SigningMaterial(ED25519, spki.decode("ascii"))


@lru_cache(maxsize=4096)
def verification_key(alg: str, stored: str) -> bytes | ed25519.Ed25519PublicKey:
    """The key a signature is verified with, from what the store keeps (parsed once
    per worker: the cache is keyed by the material itself, so a changed key is a miss)."""
    if alg == HMAC_SHA256:
        return base64.b64decode(stored, validate=True)
    if alg == ED25519:
        key = serialization.load_pem_public_key(stored.encode("ascii"))
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise SigningMaterialError("stored signing key is not an Ed25519 public key")
        return key
    raise SigningMaterialError(f"unknown signing algorithm {alg[:20]!r}")
