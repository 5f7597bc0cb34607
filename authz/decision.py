"""The vocabulary of a decision: reason codes, outcomes, identities and the verdict.

Everything here is plain data so that every layer (authenticators, policy, adapters,
CLI) can share it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from authz.store.records import ApiKeyMatch


class Reason(StrEnum):
    """Stable deny reason codes: proxies, dashboards and scripts match on them."""

    NO_ROUTE = "no_route"
    CREDENTIALS_MISSING = "credentials_missing"
    CREDENTIALS_INVALID = "credentials_invalid"
    CREDENTIAL_EXPIRED = "credential_expired"
    CREDENTIAL_REVOKED = "credential_revoked"
    INSUFFICIENT_SCOPE = "insufficient_scope"
    PRINCIPAL_NOT_ALLOWED = "principal_not_allowed"
    IP_NOT_ALLOWED = "ip_not_allowed"
    UNTRUSTED_PROXY = "untrusted_proxy"
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"
    BAD_REQUEST = "bad_request"
    INTERNAL_ERROR = "internal_error"


class IdentityKind(StrEnum):
    """The layer an identity fills: who the person is, which app, which workload."""

    USER = "user"
    CLIENT = "client"
    SERVICE = "service"


@dataclass(slots=True)
class Identity:
    """A principal an authenticator vouched for.

    ``credential`` names the credential that proved it (an API key id, a certificate
    fingerprint) and is safe to log; it is never the secret itself.
    """

    id: str
    kind: IdentityKind
    method: str
    authenticator: str
    scopes: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()
    credential: str | None = None
    # RFC 8705 certificate thumbprint: of the certificate itself (mtls), or the one a
    # token is bound to (its cnf."x5t#S256").
    x5t: str | None = None
    # RFC 9449: the RFC 7638 thumbprint of the key whose DPoP proof came with the token
    # (equal to its cnf.jkt); None for a credential without a proof of possession.
    jkt: str | None = None
    # Where a token came from when not the usual place: "cookie" (``token_from``);
    # None for Authorization and for every other credential.
    token_from: str | None = None

    def to_json(self) -> dict:
        data = {
            "id": self.id,
            "kind": str(self.kind),
            "method": self.method,
            "authenticator": self.authenticator,
            "scopes": sorted(self.scopes),
            "roles": sorted(self.roles),
            "credential": self.credential,
        }
        if self.jkt is not None:
            data["jkt"] = self.jkt
        if self.token_from is not None:
            data["token_from"] = self.token_from
        return data


class OutcomeKind(StrEnum):
    ABSENT = "absent"
    INVALID = "invalid"
    VALID = "valid"


@dataclass(slots=True)
class Outcome:
    """What one authenticator concluded about one request.

    ``slot`` names where the credential it claimed came from (``authorization``,
    ``x-api-key``…): a credential in a slot no authenticator claimed turns a
    "missing" answer into "invalid", so a token of a foreign issuer is not reported
    as absent.
    """

    kind: OutcomeKind
    identity: Identity | None = None
    reason: Reason | None = None
    detail: str = ""
    slot: str | None = None
    also: tuple[Identity, ...] = ()  # further layers proved by the same credential (a token's client)
    # A valid credential that may not be used for this request (a publishable key from a
    # foreign origin): 403 with ``reason`` and ``detail``, as an unmet scope would be.
    forbidden: bool = False
    # The stored API key the credential was identified as (its secret matched), valid or
    # not (revoked, expired, used from a refused address…): what its usage counts.
    api_key: ApiKeyMatch | None = None
    # A token presented with the DPoP scheme failed: the RFC 9449 error code its ``DPoP``
    # challenge carries (``invalid_dpop_proof`` or ``invalid_token``).
    dpop_error: str | None = None
    # Proofs of this request must carry a server nonce (RFC 9449 §9): a fresh one, for the
    # client's next proof (``DPoP-Nonce``), whether this outcome allows or refuses.
    dpop_nonce: str | None = None
    # A refused signed request (RFC 9421 §5.1): the ``Accept-Signature`` value naming the
    # signature wanted, by the key the request presented; None for any other outcome.
    accept_signature: str | None = None

    @classmethod
    def absent(cls, slot: str | None = None, detail: str = "") -> Outcome:
        """Nothing this authenticator owns. With ``slot`` and ``detail``: a credential it
        saw there and leaves to others (a key of the other kind), and why — said when
        no authenticator of the route takes it."""
        if slot is None:
            return _ABSENT
        return cls(OutcomeKind.ABSENT, detail=detail, slot=slot)

    @classmethod
    def invalid(
        cls, slot: str, detail: str, reason: Reason = Reason.CREDENTIALS_INVALID
    ) -> Outcome:
        return cls(OutcomeKind.INVALID, reason=reason, detail=detail, slot=slot)

    @classmethod
    def valid(cls, slot: str, identity: Identity) -> Outcome:
        return cls(OutcomeKind.VALID, identity=identity, slot=slot)

    @classmethod
    def refused(cls, slot: str, identity: Identity, detail: str,
                reason: Reason = Reason.PRINCIPAL_NOT_ALLOWED) -> Outcome:
        """A valid credential whose own restrictions forbid this request (403)."""
        return cls(OutcomeKind.VALID, identity=identity, reason=reason, detail=detail, slot=slot, forbidden=True)


_ABSENT = Outcome(OutcomeKind.ABSENT)


@dataclass(slots=True)
class Decision:
    """The verdict rendered by every adapter.

    ``status`` is 200 exactly for an allow; 401, 403 (or 500 for an internal failure)
    otherwise. ``challenges`` are complete ``WWW-Authenticate`` values.
    """

    allowed: bool
    status: int
    reason: Reason | None = None
    route: str | None = None
    identities: list[Identity] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    challenges: list[str] = field(default_factory=list)
    detail: str = ""
    policy_revision: str | None = None
    identity_token: str | None = None
    strip_headers: list[str] = field(default_factory=list)  # consumed credential headers
    # The API key the request presented, once identified by its secret (allowed or
    # denied): usage is counted against it. Never rendered: the id is in the identities.
    api_key: ApiKeyMatch | None = None
    # RFC 9449 §9: a server nonce for the client's next DPoP proof, sent as ``DPoP-Nonce``
    # on allow and deny alike (a route whose leaf says ``dpop_nonce``); None otherwise.
    dpop_nonce: str | None = None
    # RFC 9421 §5.1: on a 401 whose refusing leaf wanted a signature (``Accept-Signature``),
    # the signature to make; None otherwise, and always on an allow.
    accept_signature: str | None = None

    @property
    def principal(self) -> Identity | None:
        """The user if any, else the client, else the service."""
        for kind in (IdentityKind.USER, IdentityKind.CLIENT, IdentityKind.SERVICE):
            for identity in self.identities:
                if identity.kind is kind:
                    return identity
        return None

    def layer(self, kind: IdentityKind) -> Identity | None:
        for identity in self.identities:
            if identity.kind is kind:
                return identity
        return None

    @property
    def scopes(self) -> list[str]:
        merged: set[str] = set()
        for identity in self.identities:
            merged |= identity.scopes
        return sorted(merged)

    @classmethod
    def deny(
        cls,
        status: int,
        reason: Reason,
        detail: str = "",
        route: str | None = None,
        revision: str | None = None,
    ) -> Decision:
        return cls(
            allowed=False, status=status, reason=reason, route=route,
            detail=detail, policy_revision=revision,
        )

    def to_json(self) -> dict:
        principal = self.principal
        return {
            "decision": "allow" if self.allowed else "deny",
            "status": self.status,
            "reason": str(self.reason) if self.reason else None,
            "detail": self.detail,
            "route": self.route,
            "principal": None if principal is None else {
                "id": principal.id,
                "kind": str(principal.kind),
                "method": principal.method,
                "scopes": sorted(principal.scopes),
            },
            "identities": [identity.to_json() for identity in self.identities],
            "methods": list(self.methods),
            "policy_revision": self.policy_revision,
        }
