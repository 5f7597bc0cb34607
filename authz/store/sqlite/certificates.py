"""Client certificates in SQLite: registration to a principal, and the hot path's
revocation and registration check (revocations live in the revocations table)."""

from __future__ import annotations

import time

from authz.store.errors import StoreError
from authz.store.interface import CHANGE_CERTIFICATE
from authz.store.records import CertificateStatus, RegisteredCertificate
from authz.store.sqlite.database import Database, append_change
from authz.store.sqlite.principals import ensure_principal, principal_kind

_CHECK = """SELECT
    EXISTS (SELECT 1 FROM revocations WHERE kind = 'cert_fingerprint' AND issuer = '' AND value = :fp)
    OR EXISTS (SELECT 1 FROM revocations WHERE kind = 'cert_serial' AND issuer = :issuer AND value = :serial),
    p.name, p.kind, p.disabled
FROM (SELECT 1) LEFT JOIN certificates c ON c.fingerprint = :fp LEFT JOIN principals p ON p.id = c.principal_id"""

_REVOKED = ("SELECT 1 FROM revocations WHERE (kind = 'cert_fingerprint' AND issuer = '' AND value = ?) "
            "OR (kind = 'cert_serial' AND issuer = ? AND value = ?) LIMIT 1")


class SqliteCertificates:
    def __init__(self, database: Database) -> None:
        self.database = database

    def check(self, fingerprint: str, issuer_dn: str, serial_hex: str) -> CertificateStatus:
        row = self.database.execute(_CHECK, {"fp": fingerprint, "issuer": issuer_dn, "serial": serial_hex}).fetchone()
        return CertificateStatus(bool(row[0]), row[1], row[2], bool(row[3]))

    def is_revoked(self, fingerprint: str, issuer_dn: str, serial_hex: str) -> bool:
        return self.database.execute(_REVOKED, (fingerprint, issuer_dn, serial_hex)).fetchone() is not None

    def register(self, certificate: RegisteredCertificate) -> str:
        with self.database.write() as db:
            existing = db.execute("SELECT p.name FROM certificates c JOIN principals p ON p.id = c.principal_id "
                                  "WHERE c.fingerprint = ?", (certificate.fingerprint,)).fetchone()
            if existing:
                raise StoreError(f"certificate {certificate.fingerprint[:16]}… is already registered to {existing[0]}")
            principal_id = ensure_principal(db, certificate.principal, "service")
            kind = principal_kind(db, certificate.principal)
            db.execute("INSERT INTO certificates (fingerprint, principal_id, subject, not_after, created_at) "
                       "VALUES (?, ?, ?, ?, ?)", (certificate.fingerprint, principal_id, certificate.subject,
                                                  certificate.not_after, time.time()))
            append_change(db, CHANGE_CERTIFICATE, certificate.fingerprint)
        return kind  # type: ignore[return-value]

    def list(self) -> list[RegisteredCertificate]:
        rows = self.database.execute(
            "SELECT c.fingerprint, p.name, c.subject, c.not_after, c.created_at FROM certificates c "
            "JOIN principals p ON p.id = c.principal_id ORDER BY p.name").fetchall()
        return [RegisteredCertificate(r[0], r[1], r[2], r[3], r[4]) for r in rows]
