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

RFC 5280 compatibility: an operator's root without a keyUsage extension is a valid
trust anchor (§6.1: the anchor is input to path validation, not checked by it; a
keyUsage that is present must still allow keyCertSign); ``notAfter`` is inclusive
(§4.1.2.5). Every public key in the chain, root included, must meet
``authz.credentials.key_strength``. A chain longer than ``AUTHZ_MAX_CHAIN_LENGTH`` certificates
(leaf and root included) is refused.

Revocation: ``authz certs revoke`` by fingerprint or issuer + serial (read per
request, one indexed query), and ``crl_files``, processed per RFC 5280 §5 and §6.3:
signed by the certificate's issuer, whose keyUsage (when present) includes cRLSign;
CRLNumber present and not critical; no critical extension authz does not implement
(issuingDistributionPoint and delta CRLs are refused, not half-handled); no critical
entry extension; ``thisUpdate`` not in the future; ``nextUpdate`` present and not
past. A CRL that breaks a rule is unusable and fails closed: every certificate whose
issuer it names is denied, and one warning per worker names the file and the rule
until the CRL is usable again. A verified chain is cached per worker by its
fingerprints and the trust configuration until the earliest ``notAfter`` (or CRL
``nextUpdate``) in it; revocation is never cached.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import CRLEntryExtensionOID, ExtensionOID, NameOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from authz.authenticators.base import CLIENT_CERT, Authenticator, ConfigError, Context, Lint
from authz.credentials.key_strength import key_problem
from authz.credentials.x509 import facts as certificate_facts
from authz.credentials.x509 import from_base64_der
from authz.decision import Identity, IdentityKind, Outcome, Reason
from authz.request import CERT_SOURCES, CheckRequest, ForwardedCert

log = logging.getLogger("authz.mtls")
SLOT = CLIENT_CERT.name
_CRL_REPORTED: dict[str, dict[str, set[str]]] = {}
clock = time.time  # the verification time; the conformance tests pin it to each case's
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


# CRL extensions authz understands (RFC 5280 §5.2); any other critical one makes the
# CRL unusable (§5.2: "MUST reject the CRL if it encounters a critical extension
# which it does not know how to process"). IDP and delta CRLs are refused outright.
_KNOWN_CRL_EXTENSIONS = {ExtensionOID.AUTHORITY_KEY_IDENTIFIER, ExtensionOID.ISSUER_ALTERNATIVE_NAME,
                         ExtensionOID.CRL_NUMBER, ExtensionOID.AUTHORITY_INFORMATION_ACCESS,
                         ExtensionOID.FRESHEST_CRL}
_KNOWN_ENTRY_EXTENSIONS = {CRLEntryExtensionOID.CRL_REASON, CRLEntryExtensionOID.INVALIDITY_DATE}


def crl_problem(crl: x509.CertificateRevocationList) -> str | None:
    """What makes a CRL unusable on its own (issuer and time are checked per chain)."""
    extensions = {ext.oid: ext for ext in crl.extensions}
    number = extensions.get(ExtensionOID.CRL_NUMBER)
    if number is None:
        return "CRLNumber is missing (RFC 5280 §5.2.3)"
    if number.critical:
        return "CRLNumber is marked critical (RFC 5280 §5.2.3)"
    if ExtensionOID.DELTA_CRL_INDICATOR in extensions:
        return "delta CRLs are not supported (RFC 5280 §5.2.4)"
    if ExtensionOID.ISSUING_DISTRIBUTION_POINT in extensions:
        return "CRLs with an issuingDistributionPoint are not supported (RFC 5280 §5.2.5)"
    unknown = next((e.oid.dotted_string for e in crl.extensions if e.critical and e.oid not in _KNOWN_CRL_EXTENSIONS),
                   None)
    if unknown:
        return f"unknown critical extension {unknown} (RFC 5280 §5.2)"
    if crl.next_update_utc is None:
        return "nextUpdate is missing (RFC 5280 §5.1.2.5)"
    for entry in crl:
        for ext in entry.extensions:
            if ext.oid == CRLEntryExtensionOID.CERTIFICATE_ISSUER:
                return "indirect CRL entries (certificateIssuer) are not supported (RFC 5280 §5.3.3)"
            if ext.critical and ext.oid not in _KNOWN_ENTRY_EXTENSIONS:
                return f"unknown critical entry extension {ext.oid.dotted_string} (RFC 5280 §5.3)"
    return None


@dataclass(slots=True)
class CrlFile:
    """A configured CRL and what, if anything, makes it unusable on its own."""

    path: str
    crl: x509.CertificateRevocationList
    problem: str | None
    digest: str = ""  # SHA-256 of the CRL: tells a re-issued CRL under the same name apart


class MtlsAuthenticator(Authenticator):
    type = "mtls"
    file_options = ("ca_file", "intermediates_file", "crl_files")
    slots = (CLIENT_CERT,)

    @classmethod
    def lint(cls, config: dict) -> list[Lint]:
        found = []
        if config.get("cert_header"):
            found.append(Lint("cert_header", f"{config['cert_header']} is believed whatever cert_sources says: the "
                              "proxy must set or clear it on every request (a client can paste any public "
                              "certificate into it)"))
        if "cert_sources" not in config:
            found.append(Lint(None, "no cert_sources: every supported certificate header is believed; name the "
                              "one your proxy sets"))
        return found

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
        for anchor in self.anchors:
            problem = key_problem(anchor.public_key())
            if problem:
                log.warning("%s: ca_file root %s is refused as a trust anchor: %s", name,
                            anchor.subject.rfc4514_string()[:200], problem)
        self.crls: dict[str, list[CrlFile]] = {}
        # CRL file → the rules already reported for it; a dict so that clearing one
        # file's episode is a single atomic pop, safe beside other threads' lookups.
        # Shared by every compile of this authenticator in the process: a reload (or a
        # worker's start-up check) recompiles it, and that is not a new episode.
        self.crl_reported: dict[str, set[str]] = _CRL_REPORTED.setdefault(name, {})
        for index, file in enumerate(config.get("crl_files", [])):
            try:
                crl = _load_crl(context.base_dir / file)
            except OSError as exc:
                raise ConfigError(f"crl_files/{index}", f"cannot read {exc.filename}: {exc.strerror}") from None
            except ValueError as exc:
                raise ConfigError(f"crl_files/{index}", f"not a CRL: {exc}") from None
            entry = CrlFile(str(file), crl, crl_problem(crl), crl.fingerprint(hashes.SHA256()).hex())
            self.crls.setdefault(crl.issuer.rfc4514_string(), []).append(entry)
            if entry.problem:
                self._report(entry, entry.problem)
        ee_policy = ExtensionPolicy.webpki_defaults_ee()
        if self.allow_missing_san:
            ee_policy = ee_policy.may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
        self.ee_policy = ee_policy
        anchor_set = set(self.anchors)

        def key_usage(_policy, cert: x509.Certificate, ku: x509.KeyUsage | None) -> None:
            # webpki requires keyUsage on every CA; RFC 5280 §6.1 does not check the
            # anchor, and operators' long-lived roots often lack it.
            if ku is None and cert not in anchor_set:
                raise ValueError("CA certificate without keyUsage")
            if ku is not None and not ku.key_cert_sign:
                raise ValueError("CA keyUsage lacks keyCertSign")

        self.ca_policy = ExtensionPolicy.webpki_defaults_ca().may_be_present(
            x509.KeyUsage, Criticality.AGNOSTIC, key_usage)
        self.max_chain = context.max_chain_length
        self.cache = context.cache("mtls")
        # The cache is shared by every policy revision, so its key must change whenever
        # what decided a verification does: anchors, intermediates and CRL contents (a
        # CRL re-issued under the same file name revokes at once), options, chain bound.
        material = [a.fingerprint(hashes.SHA256()) for a in self.anchors + self.intermediates]
        material += [c.crl.fingerprint(hashes.SHA256()) for crls in self.crls.values() for c in crls]
        self.trust = hashlib.sha256(b"".join(material) + repr(sorted(config.items())).encode()
                                    + str(self.max_chain).encode()).hexdigest()

    def _report(self, crl: CrlFile, problem: str) -> None:
        """One warning per CRL and rule until the CRL is usable again (not one per request)."""
        reported = self.crl_reported.setdefault(crl.path, set())
        seen = f"{crl.digest}:{problem}"  # a new CRL under the same name is a new episode
        if seen not in reported:
            reported.add(seen)
            log.warning("%s: CRL %s is unusable, denying every certificate of %s: %s", self.name, crl.path,
                        crl.crl.issuer.rfc4514_string()[:200], problem)

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
        if len(cert.chain) > self.max_chain:
            return Outcome.invalid(SLOT, f"client certificate chain of {len(cert.chain)} certificates is longer "
                                         f"than AUTHZ_MAX_CHAIN_LENGTH ({self.max_chain})")

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
        # Second granularity (RFC 5280 §4.1.2.5 times have no fractions): a chain is good
        # through the whole second its notAfter names.
        now = dt.datetime.fromtimestamp(int(clock()), dt.UTC)
        if leaf.not_valid_after_utc < now:  # RFC 5280 §4.1.2.5: notAfter is inclusive
            return Outcome.invalid(SLOT, "client certificate has expired", Reason.CREDENTIAL_EXPIRED)
        if leaf.not_valid_before_utc > now:
            return Outcome.invalid(SLOT, "client certificate is not valid yet")
        verifier = (PolicyBuilder().store(self.store).time(now).max_chain_depth(max(self.max_chain - 2, 0))
                    .extension_policies(ca_policy=self.ca_policy, ee_policy=self.ee_policy)
                    .build_client_verifier())
        try:
            verified = verifier.verify(leaf, intermediates + self.intermediates)
        except VerificationError as exc:
            return Outcome.invalid(SLOT, f"client certificate not trusted: {_short(exc)}")
        for position, member in enumerate(verified.chain):
            problem = key_problem(member.public_key())
            if problem:
                role = "client" if position == 0 else "root" if position == len(verified.chain) - 1 else "intermediate"
                return Outcome.invalid(SLOT, f"{role} certificate key refused: {problem}")
        # notAfter is inclusive: the chain is good through the last second it names.
        expires = min(c.not_valid_after_utc.timestamp() for c in verified.chain) + 1
        for issued, issuer in zip(verified.chain, verified.chain[1:], strict=False):
            crl_state = self._crl_check(issued, issuer, now)
            if isinstance(crl_state, Outcome):
                return crl_state
            if crl_state is not None:
                expires = min(expires, crl_state)
        return _describe(leaf, expires)

    def _crl_check(self, cert: x509.Certificate, issuer: x509.Certificate, now: dt.datetime) -> float | Outcome | None:
        """None (no CRL covers it), the CRL's nextUpdate, or a refusal (RFC 5280 §6.3.3)."""
        crls = self.crls.get(cert.issuer.rfc4514_string(), [])
        if not crls:
            return None
        signed = [c for c in crls if _signed_by(c.crl, issuer)]
        if not signed:
            for crl in crls:
                self._report(crl, "not signed by the issuing certificate (RFC 5280 §6.3.3(g))")
            return Outcome.invalid(SLOT, "the CRL for this issuer is not signed by it")
        try:
            ku = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            ku = None
        newest = max(signed, key=lambda c: c.crl.last_update_utc)
        for crl in signed:
            problem = crl.problem
            if problem is None and ku is not None and not ku.crl_sign:
                problem = "the issuer's keyUsage lacks cRLSign (RFC 5280 §4.2.1.3, §6.3.3(f))"
            if problem is None and crl.crl.last_update_utc > now:
                problem = "thisUpdate is in the future (RFC 5280 §5.1.2.4)"
            if problem is None and crl is newest and crl.crl.next_update_utc <= now:  # type: ignore[operator]
                problem = "past its nextUpdate (RFC 5280 §6.3.3(a))"
            if problem is not None:
                self._report(crl, problem)
                return Outcome.invalid(SLOT, f"the CRL for this issuer is unusable: {problem}")
            if crl.path in self.crl_reported:
                self.crl_reported.pop(crl.path, None)  # usable again: the episode is over
        if newest.crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
            return Outcome.invalid(SLOT, "client certificate is revoked (CRL)", Reason.CREDENTIAL_REVOKED)
        return newest.crl.next_update_utc.timestamp()  # type: ignore[union-attr]

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
        if verified.expires <= clock():  # expires is one second past the inclusive notAfter
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


def _signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    try:
        return crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False  # a key type CRL signatures cannot use


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
    facts = certificate_facts(leaf)
    return VerifiedChain(
        fingerprint=facts.fingerprint, x5t=facts.x5t, serial=facts.serial,
        issuer=facts.issuer, uris=uris, dns=dns, emails=emails,
        cn=str(cns[0].value) if cns else None, expires=expires,
    )

