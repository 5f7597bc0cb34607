"""Client certificates in PostgreSQL: registration, and the hot path's check."""

from __future__ import annotations

import time

from authz.store.errors import StoreError
from authz.store.interface import CHANGE_CERTIFICATE
from authz.store.postgres.database import Database
from authz.store.postgres.principals import ensure_principal, principal_kind
from authz.store.records import CertificateStatus, RegisteredCertificate

_CHECK = """SELECT
    EXISTS (SELECT 1 FROM revocations WHERE kind = 'cert_fingerprint' AND issuer = '' AND value = %(fp)s)
    OR EXISTS (SELECT 1 FROM revocations WHERE kind = 'cert_serial' AND issuer = %(issuer)s AND value = %(serial)s),
    p.name, p.kind, p.disabled
FROM (SELECT 1) AS one LEFT JOIN certificates c ON c.fingerprint = %(fp)s
LEFT JOIN principals p ON p.id = c.principal_id"""

_REVOKED = ("SELECT 1 FROM revocations WHERE (kind = 'cert_fingerprint' AND issuer = '' AND value = %s) "
            "OR (kind = 'cert_serial' AND issuer = %s AND value = %s) LIMIT 1")


class PostgresCertificates:
    def __init__(self, database: Database) -> None:
        self.database = database

    def check(self, fingerprint: str, issuer_dn: str, serial_hex: str) -> CertificateStatus:
        row = self.database.one(_CHECK, {"fp": fingerprint, "issuer": issuer_dn, "serial": serial_hex})
        return CertificateStatus(bool(row[0]), row[1], row[2], bool(row[3]))

    def is_revoked(self, fingerprint: str, issuer_dn: str, serial_hex: str) -> bool:
        return self.database.one(_REVOKED, (fingerprint, issuer_dn, serial_hex)) is not None

    def register(self, certificate: RegisteredCertificate) -> str:
        with self.database.write() as tx:
            existing = tx.execute("SELECT p.name FROM certificates c JOIN principals p ON p.id = c.principal_id "
                                  "WHERE c.fingerprint = %s", (certificate.fingerprint,)).fetchone()
            if existing:
                raise StoreError(f"certificate {certificate.fingerprint[:16]}… is already registered to {existing[0]}")
            principal_id = ensure_principal(tx, certificate.principal, "service")
            kind = principal_kind(tx, certificate.principal)
            tx.execute("INSERT INTO certificates (fingerprint, principal_id, subject, not_after, created_at) "
                       "VALUES (%s, %s, %s, %s, %s)", (certificate.fingerprint, principal_id, certificate.subject,
                                                       certificate.not_after, time.time()))
            tx.change(CHANGE_CERTIFICATE, certificate.fingerprint)
        return kind  # type: ignore[return-value]

    def list(self) -> list[RegisteredCertificate]:
        rows = self.database.query(
            "SELECT c.fingerprint, p.name, c.subject, c.not_after, c.created_at FROM certificates c "
            "JOIN principals p ON p.id = c.principal_id ORDER BY p.name")
        return [RegisteredCertificate(r[0], r[1], r[2], r[3], r[4]) for r in rows]
