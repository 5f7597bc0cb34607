"""Password hashing (Argon2id) and the htpasswd formats we accept on import.

New passwords are hashed with Argon2id at the OWASP Password Storage Cheat Sheet's
first recommended setting (m = 19 MiB, t = 2, p = 1) and stored as a PHC string, so
the parameters travel with the hash and can be raised later without a migration.

bcrypt hashes imported from htpasswd files are verified as they are (bcrypt is still
an acceptable KDF) and replaced by an Argon2id hash on the next successful login.
Refused on import, because a leaked file would give the passwords away cheaply:
``{SHA}`` (one unsalted SHA-1), ``$apr1$`` and ``$1$`` (MD5-crypt, ~1000 MD5
rounds), classic DES ``crypt`` (8-character limit) and plain text.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import bcrypt
from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from authz.errors import AuthzError

MAX_PASSWORD_BYTES = 1024
ARGON2_MEMORY_KIB = 19 * 1024
ARGON2_ITERATIONS = 2
ARGON2_LANES = 1
_BCRYPT = re.compile(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}")


class UnsupportedHash(AuthzError, ValueError):
    """An htpasswd hash format we refuse to import (the message says why)."""


def hash_password(password: str) -> str:
    """Return an Argon2id PHC string for ``password``."""
    data = _encode(password)
    kdf = Argon2id(
        salt=os.urandom(16), length=32, iterations=ARGON2_ITERATIONS,
        lanes=ARGON2_LANES, memory_cost=ARGON2_MEMORY_KIB,
    )
    return kdf.derive_phc_encoded(data)


def verify_password(password: str, stored: str) -> bool:
    """Check ``password`` against an Argon2id PHC string or a bcrypt hash."""
    try:
        data = _encode(password)
    except ValueError:
        return False
    if stored.startswith("$argon2id$"):
        try:
            Argon2id.verify_phc_encoded(data, stored)
            return True
        except (InvalidKey, ValueError):
            return False
    if _BCRYPT.fullmatch(stored):
        # bcrypt reads at most 72 bytes; longer inputs would silently collide.
        if len(data) > 72:
            return False
        return bcrypt.checkpw(data, stored.replace("$2y$", "$2b$", 1).encode("ascii"))
    return False


def needs_rehash(stored: str) -> bool:
    """True for hashes weaker than what ``hash_password`` makes today."""
    if not stored.startswith("$argon2id$"):
        return True
    wanted = f"m={ARGON2_MEMORY_KIB},t={ARGON2_ITERATIONS},p={ARGON2_LANES}"
    return f"${wanted}$" not in stored


_DUMMY_HASH: str | None = None


def burn_verification_time(password: str) -> None:
    """Spend the time a real verification would, so unknown users cannot be told apart."""
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = hash_password(os.urandom(16).hex())
    verify_password(password, _DUMMY_HASH)


def check_importable(stored: str) -> str:
    """Return ``stored`` if we accept it from an htpasswd file, else raise UnsupportedHash."""
    if _BCRYPT.fullmatch(stored) or stored.startswith("$argon2id$"):
        return stored
    if stored.startswith("{SHA}"):
        raise UnsupportedHash("{SHA} is a single unsalted SHA-1: refused, reset this password")
    if stored.startswith(("$apr1$", "$1$")):
        raise UnsupportedHash("MD5-crypt ($apr1$/$1$) is too fast to resist cracking: refused")
    if stored.startswith(("$5$", "$6$")):
        raise UnsupportedHash("SHA-crypt ($5$/$6$) is not supported: re-create with htpasswd -B")
    if re.fullmatch(r"[./A-Za-z0-9]{13}", stored):
        raise UnsupportedHash("DES crypt keeps only 8 characters of a password: refused")
    raise UnsupportedHash("not a recognised password hash (plain text is refused)")


@dataclass(frozen=True, slots=True)
class HtpasswdLine:
    """One user line of an htpasswd file: the hash, or why it cannot be imported."""

    number: int
    user: str | None
    password_hash: str | None
    refused: str | None


def read_htpasswd(text: str) -> list[HtpasswdLine]:
    """Every user line of an Apache/nginx htpasswd file (blank lines and comments skipped),
    each with its hash if ``check_importable`` accepts it, else the reason it is refused."""
    lines = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, colon, stored = line.partition(":")
        if not colon:
            lines.append(HtpasswdLine(number, None, None, "no ':' separating user and hash"))
            continue
        try:
            lines.append(HtpasswdLine(number, name, check_importable(stored), None))
        except UnsupportedHash as exc:
            lines.append(HtpasswdLine(number, name, None, str(exc)))
    return lines


def _encode(password: str) -> bytes:
    data = password.encode("utf-8")
    if len(data) > MAX_PASSWORD_BYTES:
        raise ValueError("password too long")
    return data
