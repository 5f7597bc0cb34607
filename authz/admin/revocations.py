"""Revocations of bearer JWTs (by ``jti``) and of certificates, with their expiry rules."""

from __future__ import annotations

import time

from authz.admin.checks import check_name
from authz.authenticators.jose import TokenError, parse
from authz.credentials import x509
from authz.errors import AuthzError
from authz.store.errors import StoreError
from authz.store.interface import ANY_ISSUER, REVOCATION_KINDS, Store
from authz.store.records import RegisteredCertificate, Revocation

EXP_LEEWAY = 300.0  # a token's revocation outlives its exp by more than any configured leeway


class InvalidToken(AuthzError, ValueError):
    """A token given to be revoked that cannot be read (nothing is verified)."""


def revoke(store: Store, kind: str, value: str, issuer: str = ANY_ISSUER,
           expires_at: float | None = None) -> Revocation:
    """Record a revocation, kept until ``expires_at`` (the credential's own expiry; None: for ever)."""
    if kind not in REVOCATION_KINDS:
        raise StoreError(f"unknown revocation kind {kind!r}")
    if not value or len(value) > 1024:
        raise StoreError(f"{kind} must be 1 to 1024 characters")
    now = time.time()
    if expires_at is not None and expires_at <= now:
        raise StoreError("that credential has already expired: nothing to revoke")
    revocation = Revocation(kind, issuer or None, value, expires_at)
    store.revocations.add(revocation, now)
    return revocation


class TokenAdmin:
    def __init__(self, store: Store) -> None:
        self.store = store

    def revoke(self, jti: str | None, issuer: str | None = None, *, token: str | None = None,
               keep_for: float) -> Revocation:
        """Refuse a JWT by ``jti`` until it would have expired. With ``token``, its
        ``jti``, ``iss`` and ``exp`` fill in what was not given (read, never verified);
        without an ``exp``, the revocation is kept ``keep_for`` seconds."""
        expires_at = time.time() + keep_for
        if token is not None:
            try:
                claims = parse(token.strip()).claims
            except TokenError as exc:
                raise InvalidToken(f"not a JWT ({exc})") from None
            if not isinstance(claims.get("jti"), str):
                raise InvalidToken("the token has no jti claim: it cannot be revoked by id")
            jti = jti or claims["jti"]
            issuer = issuer or claims.get("iss")
            if isinstance(claims.get("exp"), int | float):
                expires_at = float(claims["exp"]) + EXP_LEEWAY
        if not jti:
            raise StoreError("no jti to revoke")
        return revoke(self.store, "jti", jti, issuer or ANY_ISSUER, expires_at)

    def list(self) -> list[Revocation]:
        return self.store.revocations.list("jti")


class CertificateAdmin:
    def __init__(self, store: Store) -> None:
        self.store = store

    def register(self, principal: str, fingerprint: str | None = None, *,
                 certificate: bytes | None = None) -> RegisteredCertificate:
        """Register a certificate (by fingerprint, or the PEM/DER itself) to a principal,
        created as a service if new (``mtls`` ``principal_from: registered``)."""
        if certificate is not None:
            facts = x509.facts(x509.load_certificate(certificate))
            wanted = RegisteredCertificate(facts.fingerprint, principal, facts.subject, facts.not_after)
        else:
            wanted = RegisteredCertificate(x509.normalise_fingerprint(fingerprint or ""), principal, None, None)
        check_name(principal)
        kind = self.store.certificates.register(wanted)
        return RegisteredCertificate(wanted.fingerprint, principal, wanted.subject, wanted.not_after, kind=kind)

    def revoke_fingerprint(self, fingerprint: str, not_after: float | None = None) -> Revocation:
        return revoke(self.store, "cert_fingerprint", x509.normalise_fingerprint(fingerprint), ANY_ISSUER, not_after)

    def revoke_serial(self, issuer_dn: str, serial: str, not_after: float | None = None) -> Revocation:
        return revoke(self.store, "cert_serial", x509.normalise_serial(serial), x509.normalise_dn(issuer_dn),
                      not_after)

    def revoke_certificate(self, certificate: bytes) -> Revocation:
        """Revoke a certificate (PEM or DER) both by fingerprint and by issuer + serial,
        until it expires; returns the fingerprint's revocation."""
        facts = x509.facts(x509.load_certificate(certificate))
        record = self.revoke_fingerprint(facts.fingerprint, facts.not_after)
        self.revoke_serial(facts.issuer, facts.serial, facts.not_after)
        return record

    def list(self) -> tuple[list[RegisteredCertificate], list[Revocation]]:
        """Registered certificates, and revoked ones (by fingerprint or serial)."""
        return (self.store.certificates.list(),
                [r for r in self.store.revocations.list() if r.kind != "jti"])
