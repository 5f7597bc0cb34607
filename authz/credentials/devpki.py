"""Development certificates: a CA and the client leaves it issues, made on the spot for
``authz policy init`` profiles, ``authz policy test`` fixtures and the tests.

One place says what a well-formed certificate looks like, so each of those verifies
under the mTLS authenticator's WebPKI client profile: P-256 keys, SHA-256 signatures,
critical BasicConstraints and KeyUsage (keyCertSign + cRLSign for a CA,
digitalSignature for a leaf), SubjectKeyIdentifier and AuthorityKeyIdentifier, and
for a leaf the clientAuth EKU and its names in subjectAltName. Never for production:
the keys are written unencrypted.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CLIENT_AUTH = (ExtendedKeyUsageOID.CLIENT_AUTH,)
_CA_USAGE = x509.KeyUsage(False, False, False, False, False, True, True, False, False)  # keyCertSign, cRLSign
_LEAF_USAGE = x509.KeyUsage(True, False, False, False, False, False, False, False, False)  # digitalSignature


def new_key() -> ec.EllipticCurvePrivateKey:
    """A P-256 key: strong enough for ``key_strength``, quick to make."""
    return ec.generate_private_key(ec.SECP256R1())


def private_pem(key) -> bytes:
    """A private key as unencrypted PKCS#8 PEM (development keys only)."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass
class Issued:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def key_pem(self) -> bytes:
        return private_pem(self.key)

    @property
    def sha256(self) -> str:
        return self.cert.fingerprint(hashes.SHA256()).hex()


def common_name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def issue(subject: x509.Name | str, issuer: Issued | None = None, *, ca: bool = False, uris: Iterable[str] = (),
          dns: Iterable[str] = (), emails: Iterable[str] = (), ips: Iterable[str] = (),
          eku: Iterable[x509.ObjectIdentifier] = CLIENT_AUTH, not_before: dt.datetime | None = None,
          not_after: dt.datetime | None = None, san: bool = True, key=None) -> Issued:
    """A certificate for ``subject`` (a name, or a common name alone), signed by
    ``issuer`` or self-signed; valid from a day ago for 30 days unless told otherwise.

    A CA gets no names or EKU; a leaf gets ``uris``, ``dns``, ``emails`` and ``ips`` in
    subjectAltName (``san=False`` leaves it out) and ``eku``."""
    key = key or new_key()
    signer = issuer.key if issuer else key
    name = common_name(subject) if isinstance(subject, str) else subject
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer.cert.subject if issuer else name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(not_before or now - dt.timedelta(days=1))
               .not_valid_after(not_after or now + dt.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False)
               .add_extension(_CA_USAGE if ca else _LEAF_USAGE, critical=True))
    if not ca:
        names = ([x509.UniformResourceIdentifier(u) for u in uris] + [x509.DNSName(d) for d in dns]
                 + [x509.RFC822Name(e) for e in emails] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips])
        if san and names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        eku = list(eku)
        if eku:
            builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return Issued(builder.sign(signer, hashes.SHA256()), key)
