"""Client certificates: registration to a principal and revocation, by SHA-256
fingerprint (hex of the DER) or by issuer DN + serial number."""

from __future__ import annotations

import re
import time
from typing import NamedTuple

from cryptography import x509

from authz.store.database import Database, StoreError
from authz.store.principals import Principals
from authz.store.revocations import Revocations

_HEX = re.compile(r"[0-9a-f]{64}")

_CHECK = """SELECT
    EXISTS (SELECT 1 FROM revocations WHERE kind = 'cert_fingerprint' AND issuer = '' AND value = :fp)
    OR EXISTS (SELECT 1 FROM revocations WHERE kind = 'cert_serial' AND issuer = :issuer AND value = :serial),
    p.name, p.kind, p.disabled
FROM (SELECT 1) LEFT JOIN certificates c ON c.fingerprint = :fp LEFT JOIN principals p ON p.id = c.principal_id"""


_REVOKED = ("SELECT 1 FROM revocations WHERE (kind = 'cert_fingerprint' AND issuer = '' AND value = ?) "
            "OR (kind = 'cert_serial' AND issuer = ? AND value = ?) LIMIT 1")


class CertStatus(NamedTuple):
    revoked: bool
    principal: str | None
    kind: str | None
    principal_disabled: bool


def normalise_fingerprint(text: str) -> str:
    """'AB:CD:…' or 'abcd…' (SHA-256 of the DER) → 64 lower-case hex digits."""
    value = re.sub(r"[\s:]", "", text).lower()
    if not _HEX.fullmatch(value):
        raise StoreError(f"{text[:80]!r} is not a SHA-256 fingerprint (64 hex digits, colons allowed)")
    return value


def normalise_serial(text: str) -> str:
    value = text.strip().lower().removeprefix("0x").replace(":", "")
    try:
        return format(int(value, 16), "x")
    except ValueError:
        raise StoreError(f"{text[:80]!r} is not a hexadecimal serial number") from None


def normalise_dn(text: str) -> str:
    try:
        return x509.Name.from_rfc4514_string(text).rfc4514_string()
    except ValueError as exc:
        raise StoreError(f"{text[:80]!r} is not an RFC 4514 distinguished name: {exc}") from None


class Certificates:
    def __init__(self, database: Database, principals: Principals, revocations: Revocations) -> None:
        self.database = database
        self.principals = principals
        self.revocations = revocations

    def check(self, fingerprint: str, issuer_dn: str, serial_hex: str) -> CertStatus:
        """Revocation and registration of one certificate, in one indexed query."""
        row = self.database.execute(_CHECK, {"fp": fingerprint, "issuer": issuer_dn, "serial": serial_hex}).fetchone()
        return CertStatus(bool(row[0]), row[1], row[2], bool(row[3]))

    def is_revoked(self, fingerprint: str, issuer_dn: str, serial_hex: str) -> bool:
        """Revoked by fingerprint or by issuer + serial: one indexed query."""
        return self.database.execute(_REVOKED, (fingerprint, issuer_dn, serial_hex)).fetchone() is not None

    def register(self, principal: str, fingerprint: str, subject: str | None = None,
                 not_after: float | None = None) -> dict:
        fingerprint = normalise_fingerprint(fingerprint)
        with self.database.write() as db:
            existing = db.execute("SELECT p.name FROM certificates c JOIN principals p ON p.id = c.principal_id "
                                  "WHERE c.fingerprint = ?", (fingerprint,)).fetchone()
            if existing:
                raise StoreError(f"certificate {fingerprint[:16]}… is already registered to {existing[0]}")
            principal_id, kind = self.principals.ensure(db, principal, "service")
            db.execute("INSERT INTO certificates (fingerprint, principal_id, subject, not_after, created_at) "
                       "VALUES (?, ?, ?, ?, ?)", (fingerprint, principal_id, subject, not_after, time.time()))
        return {"fingerprint": fingerprint, "principal": principal, "kind": kind, "subject": subject,
                "not_after": not_after}

    def revoke_fingerprint(self, fingerprint: str, not_after: float | None = None) -> dict:
        return self.revocations.add("cert_fingerprint", normalise_fingerprint(fingerprint), "", not_after)

    def revoke_serial(self, issuer_dn: str, serial: str, not_after: float | None = None) -> dict:
        return self.revocations.add("cert_serial", normalise_serial(serial), normalise_dn(issuer_dn), not_after)

    def list(self) -> list[dict]:
        rows = self.database.execute(
            "SELECT c.fingerprint, p.name, c.subject, c.not_after, c.created_at FROM certificates c "
            "JOIN principals p ON p.id = c.principal_id ORDER BY p.name").fetchall()
        return [{"fingerprint": r[0], "principal": r[1], "subject": r[2], "not_after": r[3], "created_at": r[4]}
                for r in rows]
