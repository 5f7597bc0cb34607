"""A small real PKI for the certificate tests: root and intermediate CAs, client
leaves with chosen SANs, EKUs and validity, CRLs — all made with ``cryptography``."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = dt.datetime.now(dt.UTC)
DAY = dt.timedelta(days=1)


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Corp"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass
class Issued:
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
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    @property
    def sha256(self) -> str:
        return self.cert.fingerprint(hashes.SHA256()).hex()


def issue(subject: str, issuer: Issued | None = None, *, ca: bool = False, uris=(), dns=(), emails=(), ips=(),
          eku=(ExtendedKeyUsageOID.CLIENT_AUTH,), not_before=None, not_after=None, san: bool = True,
          key=None) -> Issued:
    key = key or ec.generate_private_key(ec.SECP256R1())
    signer = issuer.key if issuer else key
    builder = (x509.CertificateBuilder().subject_name(name(subject))
               .issuer_name(issuer.cert.subject if issuer else name(subject))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(not_before or NOW - DAY).not_valid_after(not_after or NOW + 30 * DAY)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                                        critical=True)
    else:
        builder = builder.add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                                        critical=True)
        names = ([x509.UniformResourceIdentifier(u) for u in uris] + [x509.DNSName(d) for d in dns]
                 + [x509.RFC822Name(e) for e in emails] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips])
        if san and names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        if eku:
            builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    return Issued(builder.sign(signer, hashes.SHA256()), key)


def crl(issuer: Issued, revoked=(), *, next_update=None, last_update=None, number: int | None = 1,
        extensions=()) -> bytes:
    """A CRL as RFC 5280 §5 wants it (CRLNumber, nextUpdate); ``extensions`` adds
    (extension, critical) pairs, ``number=None`` leaves CRLNumber out."""
    builder = (x509.CertificateRevocationListBuilder().issuer_name(issuer.cert.subject)
               .last_update(last_update or NOW - DAY).next_update(next_update or NOW + 7 * DAY))
    if number is not None:
        builder = builder.add_extension(x509.CRLNumber(number), critical=False)
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    for cert in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(cert.cert.serial_number).revocation_date(NOW - DAY).build())
    return builder.sign(issuer.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


class Pki:
    """Root → intermediate → leaves, plus a second, unrelated root."""

    def __init__(self) -> None:
        self.root = issue("Mesh Root CA", ca=True)
        self.intermediate = issue("Mesh Issuing CA", self.root, ca=True)
        self.other_root = issue("Other Root CA", ca=True)

    def leaf(self, spiffe: str = "spiffe://corp/ns/payments/sa/api", issuer: Issued | None = None, **kw) -> Issued:
        return issue("client", issuer or self.intermediate, uris=[spiffe] if spiffe else (), **kw)
