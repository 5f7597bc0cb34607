"""The webhook signature: Standard Webhooks 1.0's symmetric scheme, so that receivers can
verify with any of that project's libraries or a dozen lines of their own.

Each request carries ``webhook-id`` (the delivery id, the same on every retry),
``webhook-timestamp`` (this attempt's time, integer Unix seconds) and
``webhook-signature``: ``v1,`` and the base64 HMAC-SHA256, keyed with the secret, of
``{webhook-id}.{webhook-timestamp}.{body}`` — the body exactly as sent. The timestamp is
signed so that a receiver can refuse a replayed request (more than 5 minutes old), the
id so that it cannot be swapped to defeat deduplication.

The secret is ``whsec_`` and the base64 of 24 to 64 random bytes (the spec's format:
recognisable in a configuration, and the raw bytes are the HMAC key).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

PREFIX = "whsec_"
MIN_KEY_BYTES, MAX_KEY_BYTES = 24, 64
SECRET_FORMAT = (f"{PREFIX} followed by the base64 of {MIN_KEY_BYTES} to {MAX_KEY_BYTES} random bytes "
                 "(`authz webhooks secret` makes one)")


def parse_secret(text: str) -> bytes:
    """The HMAC key a ``whsec_…`` secret holds; ``ValueError`` (never quoting it) if malformed."""
    if not text.startswith(PREFIX):
        raise ValueError(f"must be {SECRET_FORMAT}")
    try:
        key = base64.b64decode(text[len(PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"is not valid base64 after {PREFIX}: it must be {SECRET_FORMAT}") from None
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise ValueError(f"holds {len(key)} bytes: it must be {SECRET_FORMAT}")
    return key


def new_secret() -> str:
    """A fresh secret: 32 random bytes."""
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signature(key: bytes, delivery_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for one attempt."""
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def headers(key: bytes, delivery_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Every header a delivery carries besides the client's own."""
    return {"Content-Type": "application/json", "webhook-id": delivery_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(key, delivery_id, timestamp, body)}
