"""A small real PKI for the certificate tests: root and intermediate CAs, client
leaves with chosen SANs, EKUs and validity, CRLs — all made with ``cryptography``."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from authz.credentials import devpki
from authz.credentials.devpki import Issued

NOW = dt.datetime.now(dt.UTC)
DAY = dt.timedelta(days=1)


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Corp"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def issue(subject: str, issuer: Issued | None = None, *, not_before=None, not_after=None, **kw) -> Issued:
    """``devpki.issue`` under the O=Corp name, valid from a day before this module loaded."""
    return devpki.issue(name(subject), issuer, not_before=not_before or NOW - DAY,
                        not_after=not_after or NOW + 30 * DAY, **kw)


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
