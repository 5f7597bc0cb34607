"""The API key format: generation, parsing and the stored fingerprint.

A key is ``sk_<env>_<43 base62 characters>`` — 256 bits from ``secrets`` — or, for a
publishable key (meant for browser and mobile code, never a secret), ``pk_<env>_…``.
The prefix is part of what is hashed, so a key cannot change kind. Only the
SHA-256 of the whole key is stored: with 256 bits of entropy a slow KDF adds nothing
(there is no dictionary to run), and a plain hash keeps lookup to one indexed read.
The store keeps a short display form (``sk_live_AbCd…wxYz``) so that operators can
recognise a key without the database ever holding it.
"""

from __future__ import annotations

import hashlib
import re
import secrets

ENVIRONMENTS = ("live", "test")
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BODY_LENGTH = 43  # ceil(256 / log2(62))
SECRET, PUBLISHABLE = "sk", "pk"
_KEY = re.compile(rf"[sp]k_(live|test)_([0-9A-Za-z]{{{_BODY_LENGTH}}})")
MAX_KEY_LENGTH = 128


def generate(env: str, publishable: bool = False) -> str:
    """Return a new random key for ``env`` (``live`` or ``test``): ``pk_…`` when
    ``publishable``, else ``sk_…``."""
    if env not in ENVIRONMENTS:
        raise ValueError(f"environment must be one of {', '.join(ENVIRONMENTS)}")
    body = "".join(secrets.choice(_ALPHABET) for _ in range(_BODY_LENGTH))
    return f"{PUBLISHABLE if publishable else SECRET}_{env}_{body}"


def parse(key: str) -> str | None:
    """Return the key's environment, or None when it is not a well-formed key."""
    if len(key) > MAX_KEY_LENGTH:
        return None
    match = _KEY.fullmatch(key)
    return match.group(1) if match else None


def is_publishable(key: str) -> bool:
    """Whether a well-formed key (see ``parse``) is a publishable ``pk_`` key."""
    return key.startswith(PUBLISHABLE + "_")


def fingerprint(key: str) -> str:
    """The stored lookup value: SHA-256 hex of the whole key."""
    return hashlib.sha256(key.encode("ascii")).hexdigest()


def display(key: str) -> str:
    """A recognisable, non-secret form: the prefix, four characters, the last four."""
    env = parse(key)
    if env is None:
        raise ValueError("not an API key")
    prefix = key[: len(f"sk_{env}_")]
    body = key[len(prefix) :]
    return f"{prefix}{body[:4]}…{body[-4:]}"


def new_key_id() -> str:
    """A public identifier for logs and the CLI (``key_`` + 16 base62 characters)."""
    return "key_" + "".join(secrets.choice(_ALPHABET) for _ in range(16))
