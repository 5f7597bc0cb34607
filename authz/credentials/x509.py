"""Certificate encodings shared by the front doors and the ``mtls`` authenticator:
PEM and base64 DER in, bounded, fingerprinted ``ForwardedCert`` values out."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from urllib.parse import unquote

from authz.errors import AuthzError
from authz.request import ForwardedCert

# A ceiling on parsing work, not the policy: ``AUTHZ_MAX_CHAIN_LENGTH`` (default 16, at
# most this) is what the ``mtls`` authenticator enforces.
MAX_CHAIN = 64
MAX_CERT_BYTES = 16 * 1024
_PEM = re.compile(r"-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+?)-----END CERTIFICATE-----")


class Unreadable(AuthzError, ValueError):
    pass


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def b64_der(text: str) -> bytes:
    try:
        der = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise Unreadable("certificate is not valid base64") from None
    if not der or len(der) > MAX_CERT_BYTES or der[0] != 0x30:
        raise Unreadable("certificate is not DER")
    return der


def pem_chain(text: str) -> tuple[bytes, ...]:
    """DER certificates of a PEM text; tabs/spaces instead of newlines are fine."""
    blocks = _PEM.findall(text)
    if not blocks:
        raise Unreadable("no PEM certificate found")
    if len(blocks) > MAX_CHAIN:
        raise Unreadable(f"more than {MAX_CHAIN} certificates")
    return tuple(b64_der(block) for block in blocks)


def make(source: str, chain: tuple[bytes, ...], verify: str | None = None) -> ForwardedCert:
    digest = hashlib.sha256()
    for der in chain:
        digest.update(hashlib.sha256(der).digest())
    return ForwardedCert(source, chain, fingerprint(chain[0]), verify, chain_digest=digest.digest())


def from_base64_der(source: str, value: str) -> ForwardedCert:
    """A header carrying one base64 DER certificate (Caddy's ``header_up``)."""
    try:
        return make(source, (b64_der(value),))
    except Unreadable as exc:
        return ForwardedCert(source, error=str(exc))


def from_pem(source: str, text: str) -> ForwardedCert:
    """A PEM chain, leaf first (``POST /v1/decisions`` ``client_cert``, gRPC ``source.certificate``)."""
    try:
        return make(source, pem_chain(unquote(text) if "%" in text else text))
    except Unreadable as exc:
        return ForwardedCert(source, error=str(exc))


def thumbprint(der: bytes) -> str:
    """RFC 8705 ``x5t#S256``: base64url of the SHA-256 of the DER, unpadded."""
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()
