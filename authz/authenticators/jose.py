"""JWS compact parsing and JWT claim checks for the ``jwt`` authenticator.

Signatures are verified by PyJWT's algorithm objects (``jwt.get_algorithm_by_name``),
the same code ``jwt.decode`` runs. The parsing and claim rules around them live here
because ``jwt.decode`` on PyJWT 2.15 spends ~200 µs per token checking the base64url
alphabet with a per-character Python loop and decodes every segment twice over our
own ownership check (the unverified ``iss``): on the request path that is most of
the cost of a first-sight token. The rules are RFC 7515/7519/8725's, and the same
PyJWT applies:

- segments are strict base64url (alphabet, padding, canonical encoding);
- header and payload are JSON objects; ``crit`` (no extension is understood here)
  and ``b64: false`` are refused;
- ``exp`` is required and numeric; ``nbf`` and ``iat`` when present are numeric and
  not in the future; all with ``leeway``;
- ``iss`` equals the issuer; ``aud`` (string or list) names an accepted audience;
- required claims are present and not null.
"""

from __future__ import annotations

import binascii
import json
import re
from dataclasses import dataclass
from functools import cache

import jwt
from jwt.utils import base64url_decode, base64url_encode

_ALPHABET = re.compile(rb"[A-Za-z0-9_-]*")


class TokenError(ValueError):
    """The token is refused; ``expired`` distinguishes the credential_expired case."""

    def __init__(self, message: str, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


@dataclass(slots=True)
class CompactJWS:
    header: dict
    claims: dict
    signing_input: bytes
    signature: bytes


def decode_segment(segment: bytes) -> bytes:
    """Strict base64url: alphabet, at most two '=' of correct padding, canonical form."""
    stripped = segment.rstrip(b"=")
    padding = len(segment) - len(stripped)
    if padding > 2 or (padding and len(segment) % 4) or len(stripped) % 4 == 1 \
            or not _ALPHABET.fullmatch(stripped):
        raise TokenError("malformed JWT")
    try:
        decoded = base64url_decode(stripped)
    except (TypeError, binascii.Error):
        raise TokenError("malformed JWT") from None
    if base64url_encode(decoded) != stripped:
        raise TokenError("malformed JWT")
    return decoded


def _not_json(constant: str) -> None:
    """``NaN`` and ``Infinity`` are Python's JSON, not RFC 8259's: a NaN time compares
    false with every bound (never expired, never too old), so a token carrying one is
    malformed."""
    raise ValueError(f"{constant} is not JSON")


def _json_object(segment: bytes) -> dict:
    try:
        value = json.loads(decode_segment(segment), parse_constant=_not_json)
    except (ValueError, RecursionError):
        raise TokenError("malformed JWT") from None
    if not isinstance(value, dict):
        raise TokenError("malformed JWT")
    return value


def _split(token: str) -> list[bytes]:
    try:
        raw = token.encode("ascii")
    except UnicodeEncodeError:
        raise TokenError("malformed JWT") from None
    parts = raw.split(b".")
    if len(parts) != 3:
        raise TokenError("malformed JWT")
    return parts


def _header(segment: bytes) -> dict:
    header = _json_object(segment)
    if "crit" in header:
        raise TokenError("unsupported critical header parameters")
    if header.get("b64", True) is not True:
        raise TokenError("unencoded payloads are not accepted")
    return header


def parse(token: str) -> CompactJWS:
    """Split and decode a compact JWS whose payload is a JWT claims object (nothing verified yet)."""
    parts = _split(token)
    header = _header(parts[0])
    return CompactJWS(header, _json_object(parts[1]), parts[0] + b"." + parts[1], decode_segment(parts[2]))


def parse_jws(token: str) -> CompactJWS:
    """A compact JWS with any payload (``claims`` left empty): the same header and
    encoding rules as ``parse``, for checking the signature layer on its own (the
    Wycheproof JWS vectors sign the bytes ``foo``, not a claims object)."""
    parts = _split(token)
    header = _header(parts[0])
    decode_segment(parts[1])
    return CompactJWS(header, {}, parts[0] + b"." + parts[1], decode_segment(parts[2]))


@cache
def _algorithm(name: str):
    return jwt.get_algorithm_by_name(name)


def signature_valid(jws: CompactJWS, alg: str, key: object) -> bool:
    try:
        return bool(_algorithm(alg).verify(jws.signing_input, key, jws.signature))
    except (ValueError, TypeError, AttributeError, jwt.PyJWTError):
        return False  # an ECDSA signature of the wrong length, a key of another type


def _number(claims: dict, name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenError(f"{name} is not a number")
    return float(value)


def check_claims(claims: dict, *, issuer: str, audience: list[str], leeway: float, required: list[str],
                 now: float) -> float:
    """Validate the registered claims; returns ``exp``."""
    for name in ("exp", "iss", "aud", *required):
        if claims.get(name) is None:
            raise TokenError(f"token lacks the {name} claim")
    exp = _number(claims, "exp")
    if now >= exp + leeway:  # type: ignore[operator]
        raise TokenError("token has expired", expired=True)
    nbf, iat = _number(claims, "nbf"), _number(claims, "iat")
    if (nbf is not None and nbf > now + leeway) or (iat is not None and iat > now + leeway):
        raise TokenError("token is not valid yet")
    if claims["iss"] != issuer:
        raise TokenError("token issuer is not accepted here")
    aud = claims["aud"]
    named = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if not any(isinstance(a, str) and a in audience for a in named):
        raise TokenError("token audience is not accepted here")
    return exp  # type: ignore[return-value]
