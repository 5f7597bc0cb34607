"""What the store hands out: one frozen record per kind of row, whatever the backend.

Hot-path records (``ApiKeyMatch``, ``UserCredentials``, ``CertificateStatus``,
``IdentitySigningKey``) carry just what a decision needs; listing records carry what
an operator sees, and their ``to_json()`` is the CLI's ``--json`` form.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


def _without_unknown(fields: dict, *optional: str) -> dict:
    """``fields`` without those ``optional`` ones not known here (None): one record type
    serves both the reply to a write and a listing, whose JSON differ by these keys."""
    return {name: value for name, value in fields.items() if name not in optional or value is not None}


# -- API keys ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApiKeyMatch:
    """What the hot path needs to judge a presented key, read in one indexed query."""

    id: str
    env: str
    scopes: frozenset[str]
    allow_ips: str
    status: str
    expires_at: float | None
    principal: str
    kind: str
    principal_disabled: bool
    roles: frozenset[str]
    hash: str
    publishable: bool = False
    origins: str = ""  # a publishable key's allowed origins, space-separated
    # With ``--on-anomaly deny``: the oldest anomaly nobody acknowledged, "kind id" (None: none, or not opted in).
    open_anomaly: str | None = None
    # Signed requests (RFC 9421): "hmac-sha256" or "ed25519" and the verification
    # material (base64 secret, or SPKI PEM public key); None: the key signs nothing.
    signing_alg: str | None = None
    signing_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class NewApiKey:
    """A key to insert: its secret is already reduced to the fingerprint and display form."""

    id: str
    principal: str
    fingerprint: str
    display: str
    env: str
    scopes: tuple[str, ...]
    allow_ips: tuple[str, ...]
    created_at: float
    expires_at: float | None
    rotated_from: str | None = None
    publishable: bool = False
    origins: tuple[str, ...] = ()
    on_anomaly: str = "allow"  # "deny": refused while an anomaly of it is not acknowledged
    signing_alg: str | None = None  # RFC 9421: "hmac-sha256" or "ed25519"
    signing_key: str | None = field(default=None, repr=False)  # base64 HMAC secret or SPKI PEM


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """An API key as operators see it (never the secret). ``status`` is the stored one;
    ``current_status`` also says ``expired``."""

    id: str
    principal: str
    principal_kind: str
    display: str
    env: str
    status: str
    scopes: tuple[str, ...]
    allow_ips: tuple[str, ...]
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None
    rotated_from: str | None
    replaced_by: str | None
    principal_disabled: bool
    publishable: bool = False
    origins: tuple[str, ...] = ()
    on_anomaly: str = "allow"  # "deny": refused while an anomaly of it is not acknowledged
    signing: str | None = None  # RFC 9421 signing algorithm (never the material)

    @property
    def current_status(self) -> str:
        if self.status != "revoked" and self.expires_at is not None and self.expires_at <= time.time():
            return "expired"
        return self.status

    def to_json(self) -> dict:
        return {
            "id": self.id, "principal": self.principal, "principal_kind": self.principal_kind,
            "display": self.display, "env": self.env, "status": self.current_status, "scopes": list(self.scopes),
            "allow_ips": list(self.allow_ips), "created_at": self.created_at, "expires_at": self.expires_at,
            "revoked_at": self.revoked_at, "last_used_at": self.last_used_at, "rotated_from": self.rotated_from,
            "replaced_by": self.replaced_by, "principal_disabled": self.principal_disabled,
            "publishable": self.publishable, "origins": list(self.origins), "on_anomaly": self.on_anomaly,
            "signing": self.signing,
        }


# -- API key usage (written in batches by each serving process) -------------------------------


@dataclass(frozen=True, slots=True)
class KeyUsage:
    """One key's requests counted by one process since its last write: what the usage
    table adds (counts summed, first sightings kept, the later last request wins).

    ``hours``: (hour start, allowed, denied); ``networks``: (network, first seen, last
    seen), a network being the client's IPv4 /24 or IPv6 /48; ``after_rotation``: how
    many of the requests came while the key was deprecated, i.e. after its rotation."""

    key_id: str
    hours: tuple[tuple[int, int, int], ...]
    networks: tuple[tuple[str, float, float], ...]
    last_at: float
    last_allowed: bool
    last_client_ip: str | None
    last_route: str | None
    after_rotation: int = 0


@dataclass(frozen=True, slots=True)
class UsageHour:
    """Requests that presented a key in one hour (``hour``: its start, seconds since the
    epoch): allowed, and denied although the key was identified (revoked, expired, used
    from a refused address, short of a scope…)."""

    hour: int
    allowed: int
    denied: int

    def to_json(self) -> dict:
        return {"hour": self.hour, "allowed": self.allowed, "denied": self.denied}


@dataclass(frozen=True, slots=True)
class KeyNetwork:
    """A client network (IPv4 /24, IPv6 /48) a key was presented from."""

    network: str
    first_seen: float
    last_seen: float

    def to_json(self) -> dict:
        return {"network": self.network, "first_seen": self.first_seen, "last_seen": self.last_seen}


@dataclass(frozen=True, slots=True)
class LastRequest:
    """The latest request that presented a key (allowed or denied), and how many came
    while it was deprecated (since its rotation)."""

    key_id: str
    at: float
    allowed: bool
    client_ip: str | None
    route: str | None
    after_rotation: int

    def to_json(self) -> dict:
        return {"at": self.at, "allowed": self.allowed, "client_ip": self.client_ip, "route": self.route}


@dataclass(frozen=True, slots=True)
class KeyAnomaly:
    """Something unusual about a key's use (``authz.webhooks.anomalies``): one row per
    key, ``kind`` and ``span`` (the hour, day, network or grace period it is about), so
    that the same anomaly noticed by many workers or in many batches is one row. ``id``
    is derived from those three (``an_`` and 16 hex digits): what ``--ack`` takes."""

    id: str
    key_id: str
    kind: str
    span: str
    at: float
    detail: str
    acked_at: float | None = None

    def to_json(self) -> dict:
        return {"id": self.id, "key_id": self.key_id, "kind": self.kind, "span": self.span, "at": self.at,
                "detail": self.detail, "acked_at": self.acked_at}


# -- principals and users -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserCredentials:
    """A user as Basic auth needs it: the stored hash and what a login grants."""

    name: str
    password_hash: str | None
    scopes: frozenset[str]
    roles: frozenset[str]
    disabled: bool


@dataclass(frozen=True, slots=True)
class Principal:
    """A user, client or service as operators see it (never the hash)."""

    name: str
    kind: str
    scopes: tuple[str, ...]
    roles: tuple[str, ...]
    disabled: bool
    has_password: bool
    created_at: float
    updated_at: float

    def to_json(self) -> dict:
        return {"name": self.name, "kind": self.kind, "scopes": list(self.scopes), "roles": list(self.roles),
                "disabled": self.disabled, "has_password": self.has_password, "created_at": self.created_at,
                "updated_at": self.updated_at}


# -- revocations and certificates ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Revocation:
    """A revoked token id or certificate. ``created_at`` is None for one just requested
    (the reply to ``revoke`` says what was asked, the listing what is on record)."""

    kind: str
    issuer: str | None
    value: str
    expires_at: float | None
    created_at: float | None = None

    def to_json(self) -> dict:
        return _without_unknown({"kind": self.kind, "issuer": self.issuer, "value": self.value,
                                 "expires_at": self.expires_at, "created_at": self.created_at}, "created_at")


@dataclass(frozen=True, slots=True)
class CertificateStatus:
    """Revocation and registration of one presented certificate, read in one query."""

    revoked: bool
    principal: str | None
    kind: str | None
    principal_disabled: bool


@dataclass(frozen=True, slots=True)
class RegisteredCertificate:
    """A certificate registered to a principal. ``kind`` (the principal's) is known right
    after registering; ``created_at`` when listed."""

    fingerprint: str
    principal: str
    subject: str | None
    not_after: float | None
    created_at: float | None = None
    kind: str | None = None

    def to_json(self) -> dict:
        return _without_unknown({"fingerprint": self.fingerprint, "principal": self.principal, "kind": self.kind,
                                 "subject": self.subject, "not_after": self.not_after,
                                 "created_at": self.created_at}, "kind", "created_at")


# -- authz's own signing keys ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IdentitySigningKey:
    """The key authz signs X-Auth-Token with (not a key it verifies others' tokens with:
    those are ``authenticators.keysets``)."""

    kid: str
    algorithm: str
    private_pem: str
    created_at: float


@dataclass(frozen=True, slots=True)
class NewIdentitySigningKey:
    """A generated signing key to install: the private key as PKCS#8 PEM, the public JWK."""

    kid: str
    algorithm: str
    private_pem: str
    public_jwk: dict
    created_at: float


@dataclass(frozen=True, slots=True)
class SigningKeyRecord:
    """A signing key as operators see it (never the private key)."""

    kid: str
    algorithm: str
    created_at: float
    retired_at: float | None
    publish_until: float | None

    @property
    def status(self) -> str:
        return "active" if self.retired_at is None else "retired"

    def to_json(self) -> dict:
        return {"kid": self.kid, "algorithm": self.algorithm, "created_at": self.created_at,
                "retired_at": self.retired_at, "publish_until": self.publish_until, "status": self.status}


@dataclass(frozen=True, slots=True)
class SigningKeyRotation:
    """What a rotation did: the new key, the keys it retired and until when they stay published."""

    kid: str
    algorithm: str
    created_at: float
    retired: tuple[str, ...]
    old_published_until: float | None

    def to_json(self) -> dict:
        return {"kid": self.kid, "algorithm": self.algorithm, "created_at": self.created_at,
                "retired": list(self.retired), "old_published_until": self.old_published_until}


# -- policy snapshots --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PolicySnapshot:
    """A good policy revision: every file it was built from, by relative name."""

    revision: str
    files: dict[str, bytes]


# -- the change log --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    """One committed write, as replicas follow it: ``kind`` names what changed (see
    ``authz.store.interface.CHANGE_KINDS``) and ``ref`` which one (a key's fingerprint, a
    principal's name, a revocation as JSON, a certificate's fingerprint, a kid, a directory)."""

    id: int
    kind: str
    ref: str


# -- the webhook outbox ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewWebhookEvent:
    """An event to deliver: ``id`` is its delivery id (``webhook-id``, the same on every
    retry, so receivers deduplicate by it), ``body`` the exact JSON that will be signed
    and sent (``authz.webhooks.events`` builds it; it never holds a secret)."""

    id: str
    type: str
    body: str
    created_at: float


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """An outbox row as deliverers and operators see it. ``state``: ``pending`` (to
    send, at ``next_attempt_at``), ``delivered`` or ``failed`` (given up); ``finished_at``
    is when it became one of the last two."""

    id: str
    type: str
    body: str
    state: str
    created_at: float
    attempts: int
    next_attempt_at: float
    finished_at: float | None
    last_error: str | None

    def to_json(self) -> dict:
        return {"id": self.id, "type": self.type, "state": self.state, "created_at": self.created_at,
                "attempts": self.attempts, "next_attempt_at": self.next_attempt_at,
                "finished_at": self.finished_at, "last_error": self.last_error, "body": self.body}


@dataclass(frozen=True, slots=True)
class OutboxCounts:
    """What the outbox holds, for ``/metrics``: events by state, and when the oldest
    event still to deliver was created (None when there is none)."""

    pending: int
    delivered: int
    failed: int
    oldest_pending: float | None
