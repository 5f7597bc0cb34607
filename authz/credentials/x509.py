"""Certificate encodings shared by the front doors, the ``mtls`` authenticator and the
admin library: PEM and base64 DER in, bounded, fingerprinted ``ForwardedCert`` values
out; the facts a store records about a certificate; operators' spellings of fingerprints,
serial numbers and issuer names, normalised."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from authz.errors import AuthzError
from authz.request import ForwardedCert

# A ceiling on parsing work, not the policy: ``AUTHZ_MAX_CHAIN_LENGTH`` (default 16, at
# most this) is what the ``mtls`` authenticator enforces.
MAX_CHAIN = 64
MAX_CERT_BYTES = 16 * 1024
_PEM = re.compile(r"-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+?)-----END CERTIFICATE-----")


class Unreadable(AuthzError, ValueError):
    pass


class NotACertificateReference(AuthzError, ValueError):
    """An operator's fingerprint, serial number or issuer name that is not one."""


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


@dataclass(frozen=True, slots=True)
class CertificateFacts:
    """What the store and the ``mtls`` authenticator know a certificate by."""

    der: bytes
    fingerprint: str  # SHA-256 of the DER, lower-case hex
    x5t: str  # RFC 8705 x5t#S256
    issuer: str  # RFC 4514
    serial: str  # lower-case hex, no leading zeros
    subject: str  # RFC 4514
    not_after: float  # the notAfter instant, epoch seconds


def load_certificate(data: bytes) -> x509.Certificate:
    """One certificate, PEM or DER; ``Unreadable`` otherwise."""
    try:
        return x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data else x509.load_der_x509_certificate(data)
    except ValueError:
        raise Unreadable("not a PEM or DER certificate") from None


def facts(cert: x509.Certificate) -> CertificateFacts:
    der = cert.public_bytes(Encoding.DER)
    return CertificateFacts(der=der, fingerprint=fingerprint(der), x5t=thumbprint(der),
                            issuer=cert.issuer.rfc4514_string(), serial=format(cert.serial_number, "x"),
                            subject=cert.subject.rfc4514_string(), not_after=cert.not_valid_after_utc.timestamp())


_HEX_FINGERPRINT = re.compile(r"[0-9a-f]{64}")


def normalise_fingerprint(text: str) -> str:
    """'AB:CD:…' or 'abcd…' (SHA-256 of the DER) → 64 lower-case hex digits."""
    value = re.sub(r"[\s:]", "", text).lower()
    if not _HEX_FINGERPRINT.fullmatch(value):
        raise NotACertificateReference(
            f"{text[:80]!r} is not a SHA-256 fingerprint (64 hex digits, colons allowed)")
    return value


def normalise_serial(text: str) -> str:
    """'0x01:AB', '01ab' → '1ab' (as ``facts`` spells it)."""
    value = text.strip().lower().removeprefix("0x").replace(":", "")
    try:
        return format(int(value, 16), "x")
    except ValueError:
        raise NotACertificateReference(f"{text[:80]!r} is not a hexadecimal serial number") from None


def normalise_dn(text: str) -> str:
    """An issuer name as ``facts`` spells it (RFC 4514, as cryptography writes it)."""
    try:
        return x509.Name.from_rfc4514_string(text).rfc4514_string()
    except ValueError as exc:
        raise NotACertificateReference(f"{text[:80]!r} is not an RFC 4514 distinguished name: {exc}") from None
