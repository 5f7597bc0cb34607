"""``mtls``: client certificates forwarded by a trusted proxy, verified here.

authz never takes the proxy's word alone: the chain is built and verified with
``cryptography.x509.verification`` against the authenticator's ``ca_file`` (plus the
intermediates the proxy forwarded and those of ``intermediates_file``: nginx
forwards the leaf alone), at the current time, with the WebPKI client
profile: clientAuth is required where the leaf has an EKU, a serverAuth-only leaf is
refused, and a leaf without subjectAltName is refused unless ``allow_missing_san``
is set (allowed only with ``principal_from`` ``subject_cn`` or ``registered``).
``proxy_verified: "require"`` additionally demands the proxy's own SUCCESS where the
proxy reports one (nginx ``$ssl_client_verify``, which must accompany every nginx
certificate header; ``NONE`` with no certificate is absent, never invalid).

Revocation: ``authz certs revoke`` by fingerprint or issuer + serial (read per
request, one indexed query), and ``crl_files`` (signature checked against the
issuing certificate; a CRL past its ``nextUpdate`` denies). A verified chain is
cached per worker by its fingerprints and the trust configuration until the earliest
``notAfter`` (or CRL ``nextUpdate``) in it; revocation is never cached.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from authz.authenticators.base import Authenticator, ConfigError, Context
from authz.certs import from_base64_der, thumbprint
from authz.decision import Identity, IdentityKind, Outcome, Reason
from authz.request import CERT_SOURCES, CheckRequest, ForwardedCert

SLOT = "client_cert"
PRINCIPAL_FROM = ("san_uri", "san_dns", "san_email", "subject_cn", "registered")


@dataclass(slots=True)
class VerifiedChain:
    """What a successful verification established (cached; revocation is not)."""

    fingerprint: str
    x5t: str  # RFC 8705 thumbprint: base64url(SHA-256(DER))
    serial: str
    issuer: str
    uris: tuple[str, ...]
    dns: tuple[str, ...]
    emails: tuple[str, ...]
    cn: str | None
    expires: float


def _bundle(context: Context, config: dict, option: str) -> list[x509.Certificate]:
    """The PEM certificates of the file an option names, or a ConfigError saying why not."""
    path = context.base_dir / config[option]
    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except OSError as exc:
        raise ConfigError(option, f"cannot read {exc.filename}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(option, f"not a PEM certificate bundle: {exc}") from None
    if not certs:
        raise ConfigError(option, f"{path} holds no certificate")
    return certs


def _load_crl(path) -> x509.CertificateRevocationList:
    data = path.read_bytes()
    return x509.load_pem_x509_crl(data) if b"-----BEGIN" in data else x509.load_der_x509_crl(data)


class MtlsAuthenticator(Authenticator):
    type = "mtls"

    def __init__(self, name: str, config: dict, context: Context) -> None:
        super().__init__(name, config, context)
        self.principal_from: str = config.get("principal_from", "san_uri")
        self.sources = frozenset(config.get("cert_sources", CERT_SOURCES))
        self.cert_header: str | None = config.get("cert_header")
        self.require_proxy_verified = config.get("proxy_verified", "ignore") == "require"
        self.allow_missing_san = bool(config.get("allow_missing_san", False))
        if self.allow_missing_san and self.principal_from not in ("subject_cn", "registered"):
            raise ConfigError("allow_missing_san", "a leaf without SAN can only be named by subject_cn or registered")
        self.anchors = _bundle(context, config, "ca_file")
        self.store = Store(self.anchors)
        self.intermediates = _bundle(context, config, "intermediates_file") if "intermediates_file" in config else []
        self.crls: dict[str, list[x509.CertificateRevocationList]] = {}
        for index, file in enumerate(config.get("crl_files", [])):
            try:
                crl = _load_crl(context.base_dir / file)
            except OSError as exc:
                raise ConfigError(f"crl_files/{index}", f"cannot read {exc.filename}: {exc.strerror}") from None
            except ValueError as exc:
                raise ConfigError(f"crl_files/{index}", f"not a CRL: {exc}") from None
            self.crls.setdefault(crl.issuer.rfc4514_string(), []).append(crl)
        ee_policy = ExtensionPolicy.webpki_defaults_ee()
        if self.allow_missing_san:
            ee_policy = ee_policy.may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
        self.ee_policy = ee_policy
        self.cache = context.cache("mtls")
        anchors = b"".join(a.fingerprint(hashes.SHA256()) for a in self.anchors)
        self.trust = hashlib.sha256(anchors + repr(sorted(config.items())).encode()).hexdigest()

    # -- which certificate ---------------------------------------------------------
    def _presented(self, request: CheckRequest) -> list[ForwardedCert]:
        certs = [c for c in request.client_certs if c.source in self.sources]
        if self.cert_header:
            value = request.headers.get(self.cert_header)
            if value:
                certs.append(from_base64_der("header", value))
        return certs

    def authenticate(self, request: CheckRequest) -> Outcome:
        # nginx's "NONE" with no certificate is the door saying "no certificate": absent,
        # whatever proxy_verified says, so `any: [mtls, basic]` still reaches basic.
        certs = [c for c in self._presented(request) if c.chain or c.sha256 or c.error or c.proxy_verify != "NONE"]
        if not certs:
            return Outcome.absent()
        broken = next((c for c in certs if c.error), None)
        if broken is not None:
            return Outcome.invalid(SLOT, f"unreadable client certificate from {broken.source}: {broken.error}")
        if any(c.proxy_verify == "NONE" for c in certs):
            return Outcome.invalid(SLOT, "the proxy reports no client certificate, yet one was forwarded")
        if self.require_proxy_verified and any(c.proxy_verify not in (None, "SUCCESS") for c in certs):
            return Outcome.invalid(SLOT, "the proxy did not verify the client certificate")
        presented = [c for c in certs if c.chain or c.sha256]
        if not presented:
            return Outcome.absent()  # a verify header alone, with no certificate
        if len({c.sha256 for c in presented}) > 1:
            return Outcome.invalid(SLOT, "different client certificates in different headers")
        cert = presented[0]
        if not cert.chain:
            return self._fingerprint_only(cert.sha256)  # type: ignore[arg-type]

        chain_key = (self.trust, cert.chain_digest)
        verified = self.cache.get(chain_key)
        if verified is None:
            result = self._verify(cert.chain)
            if isinstance(result, Outcome):
                return result
            verified = result
            self.cache.set(chain_key, verified, verified.expires)
        return self._identity(verified)

    # -- verification --------------------------------------------------------------
    def _verify(self, chain: tuple[bytes, ...]) -> VerifiedChain | Outcome:
        try:
            leaf = x509.load_der_x509_certificate(chain[0])
            intermediates = [x509.load_der_x509_certificate(der) for der in chain[1:]]
        except ValueError:
            return Outcome.invalid(SLOT, "malformed client certificate")
        now = dt.datetime.now(dt.UTC)
        if leaf.not_valid_after_utc <= now:
            return Outcome.invalid(SLOT, "client certificate has expired", Reason.CREDENTIAL_EXPIRED)
        if leaf.not_valid_before_utc > now:
            return Outcome.invalid(SLOT, "client certificate is not valid yet")
        verifier = (PolicyBuilder().store(self.store).time(now)
                    .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=self.ee_policy)
                    .build_client_verifier())
        try:
            verified = verifier.verify(leaf, intermediates + self.intermediates)
        except VerificationError as exc:
            return Outcome.invalid(SLOT, f"client certificate not trusted: {_short(exc)}")
        expires = min(c.not_valid_after_utc.timestamp() for c in verified.chain)
        for issued, issuer in zip(verified.chain, verified.chain[1:], strict=False):
            crl_state = self._crl_check(issued, issuer, now)
            if isinstance(crl_state, Outcome):
                return crl_state
            if crl_state is not None:
                expires = min(expires, crl_state)
        return _describe(leaf, expires)

    def _crl_check(self, cert: x509.Certificate, issuer: x509.Certificate, now: dt.datetime) -> float | Outcome | None:
        """None (no CRL covers it), the CRL's nextUpdate, or a refusal."""
        crls = self.crls.get(cert.issuer.rfc4514_string(), [])
        signed = [c for c in crls if c.is_signature_valid(issuer.public_key())]  # type: ignore[arg-type]
        if crls and not signed:
            return Outcome.invalid(SLOT, "the CRL for this issuer is not signed by it")
        if not signed:
            return None
        crl = max(signed, key=lambda c: c.last_update_utc)
        if crl.next_update_utc is None or crl.next_update_utc <= now:
            return Outcome.invalid(SLOT, "the CRL for this issuer is stale (past nextUpdate)")
        if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
            return Outcome.invalid(SLOT, "client certificate is revoked (CRL)", Reason.CREDENTIAL_REVOKED)
        return crl.next_update_utc.timestamp()

    # -- who it is -----------------------------------------------------------------
    def _fingerprint_only(self, fingerprint: str) -> Outcome:
        if self.principal_from != "registered":
            return Outcome.invalid(SLOT, "only a certificate hash was forwarded; that needs principal_from: registered")
        status = self.context.store.certificates.check(fingerprint, "", "")
        return self._registered(status, fingerprint, None)

    def _identity(self, verified: VerifiedChain) -> Outcome:
        if self.principal_from != "registered":
            if self.context.store.certificates.is_revoked(verified.fingerprint, verified.issuer, verified.serial):
                return Outcome.invalid(SLOT, f"client certificate {verified.fingerprint[:16]}… is revoked",
                                       Reason.CREDENTIAL_REVOKED)
            status = None
        else:
            status = self.context.store.certificates.check(verified.fingerprint, verified.issuer, verified.serial)
        if status is not None and status.revoked:
            return Outcome.invalid(SLOT, f"client certificate {verified.fingerprint[:16]}… is revoked",
                                   Reason.CREDENTIAL_REVOKED)
        if verified.expires <= time.time():
            return Outcome.invalid(SLOT, "client certificate has expired", Reason.CREDENTIAL_EXPIRED)
        if self.principal_from == "registered":
            return self._registered(status, verified.fingerprint, verified.x5t)
        names = {"san_uri": verified.uris, "san_dns": verified.dns, "san_email": verified.emails,
                 "subject_cn": (verified.cn,) if verified.cn else ()}[self.principal_from]
        if not names:
            return Outcome.invalid(SLOT, f"client certificate has no {self.principal_from.replace('_', ' ')}")
        principal = next((n for n in names if n.startswith("spiffe://")), names[0])
        return Outcome.valid(SLOT, Identity(principal, IdentityKind.SERVICE, self.type, self.name,
                                            credential=verified.fingerprint, x5t=verified.x5t))

    def _registered(self, status, fingerprint: str, x5t: str | None) -> Outcome:
        if status.revoked:
            return Outcome.invalid(SLOT, f"client certificate {fingerprint[:16]}… is revoked",
                                   Reason.CREDENTIAL_REVOKED)
        if status.principal is None:
            return Outcome.invalid(SLOT, f"client certificate {fingerprint[:16]}… is not registered")
        if status.principal_disabled:
            return Outcome.invalid(SLOT, f"principal {status.principal} is disabled", Reason.CREDENTIAL_REVOKED)
        return Outcome.valid(SLOT, Identity(status.principal, IdentityKind.SERVICE, self.type, self.name,
                                            credential=fingerprint, x5t=x5t))


def _short(exc: Exception) -> str:
    return str(exc).split(" (encountered", 1)[0][:160]


def _describe(leaf: x509.Certificate, expires: float) -> VerifiedChain:
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = tuple(san.get_values_for_type(x509.UniformResourceIdentifier))
        dns = tuple(san.get_values_for_type(x509.DNSName))
        emails = tuple(san.get_values_for_type(x509.RFC822Name))
    except x509.ExtensionNotFound:
        uris = dns = emails = ()
    cns = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    der = leaf.public_bytes(Encoding.DER)
    return VerifiedChain(
        fingerprint=hashlib.sha256(der).hexdigest(), x5t=thumbprint(der), serial=format(leaf.serial_number, "x"),
        issuer=leaf.issuer.rfc4514_string(), uris=uris, dns=dns, emails=emails,
        cn=str(cns[0].value) if cns else None, expires=expires,
    )

