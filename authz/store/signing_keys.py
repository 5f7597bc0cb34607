"""authz's own signing keys (Ed25519) for the X-Auth-Token identity JWT.

The private key is kept in the store (protect the file like any key file); the CLI
rotates it. A retired key stops signing at once and stays in the published JWKS
until ``publish_until``, past the expiry of anything it signed.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import NamedTuple

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from authz.store.database import Database

ALGORITHM = "EdDSA"


class SigningKey(NamedTuple):
    kid: str
    private_key: ed25519.Ed25519PrivateKey
    created_at: float


class SigningKeys:
    def __init__(self, database: Database) -> None:
        self.database = database

    def active(self) -> SigningKey | None:
        row = self.database.execute(
            "SELECT kid, private_pem, created_at FROM signing_keys WHERE retired_at IS NULL "
            "ORDER BY created_at DESC LIMIT 1").fetchone()
        if row is None:
            return None
        key = serialization.load_pem_private_key(row[1].encode(), password=None)
        return SigningKey(row[0], key, row[2])  # type: ignore[arg-type]

    def published(self) -> list[dict]:
        rows = self.database.execute(
            "SELECT public_jwk FROM signing_keys WHERE publish_until IS NULL OR publish_until > ? "
            "ORDER BY created_at DESC", (time.time(),)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def rotate(self, keep_old_for: float) -> dict:
        """Create the signing key; retire the previous one, published ``keep_old_for`` more seconds."""
        private = ed25519.Ed25519PrivateKey.generate()
        kid = "authz-" + secrets.token_hex(8)
        jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(private.public_key()))
        jwk.update({"kid": kid, "alg": ALGORITHM, "use": "sig"})
        pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
        now = time.time()
        with self.database.write() as db:
            retired = db.execute("SELECT kid FROM signing_keys WHERE retired_at IS NULL").fetchall()
            db.execute("UPDATE signing_keys SET retired_at = ?, publish_until = ? WHERE retired_at IS NULL",
                       (now, now + keep_old_for))
            db.execute("INSERT INTO signing_keys (kid, algorithm, private_pem, public_jwk, created_at) "
                       "VALUES (?, ?, ?, ?, ?)", (kid, ALGORITHM, pem, json.dumps(jwk), now))
            db.execute("DELETE FROM signing_keys WHERE publish_until IS NOT NULL AND publish_until < ?", (now,))
        return {"kid": kid, "algorithm": ALGORITHM, "created_at": now, "retired": [r[0] for r in retired],
                "old_published_until": now + keep_old_for if retired else None}

    def ensure(self, keep_old_for: float) -> None:
        if self.active() is None:
            self.rotate(keep_old_for)

    def list(self) -> list[dict]:
        rows = self.database.execute(
            "SELECT kid, algorithm, created_at, retired_at, publish_until FROM signing_keys "
            "ORDER BY created_at DESC").fetchall()
        return [{"kid": r[0], "algorithm": r[1], "created_at": r[2], "retired_at": r[3], "publish_until": r[4],
                 "status": "active" if r[3] is None else "retired"} for r in rows]
