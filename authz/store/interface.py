"""What the rest of authz may ask of a credential store: small Protocols per consumer.

The hot path (authenticators, the identity-token signer, the policy reloader, the app)
reads through ``CredentialReads`` and ``ServingStore``; the admin library (and so the
CLI) writes through ``Store``, which adds the tables' primitive writes. A backend is a
class with the tables below as attributes (``authz.store.sqlite.SqliteStore`` today);
nothing outside ``authz.store`` names it: stores come from ``authz.store.open_store``.

Table methods are primitive reads and writes, each write one transaction. The rules
(what a valid scope is, how a key is generated or rotated, how long a revocation or a
snapshot is kept) live in ``authz.admin`` and are the same for every backend.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Protocol

from authz.store.records import (
    ApiKeyMatch,
    ApiKeyRecord,
    CertificateStatus,
    Change,
    IdentitySigningKey,
    KeyAnomaly,
    KeyNetwork,
    KeyUsage,
    LastRequest,
    NewApiKey,
    NewIdentitySigningKey,
    NewWebhookEvent,
    OutboxCounts,
    PolicySnapshot,
    Principal,
    RegisteredCertificate,
    Revocation,
    SigningKeyRecord,
    UsageHour,
    UserCredentials,
    WebhookEvent,
)

if TYPE_CHECKING:
    from authz.request import IPAddress

ANY_ISSUER = ""  # a revocation that holds for every issuer
REVOCATION_KINDS = ("jti", "cert_fingerprint", "cert_serial")

# What a change-log entry says changed; its ``ref`` names which one.
CHANGE_API_KEY = "api_key"  # ref: the key's fingerprint
CHANGE_PRINCIPAL = "principal"  # ref: the principal's name (users, disabling reaches keys and certificates)
CHANGE_REVOCATION = "revocation"  # ref: JSON [kind, issuer, value]
CHANGE_REVOCATIONS = "revocations"  # ref: "": many rows went (a purge): re-read them all
CHANGE_CERTIFICATE = "certificate"  # ref: the certificate's fingerprint
CHANGE_SIGNING_KEY = "signing_key"  # ref: the new kid
CHANGE_POLICY_SNAPSHOT = "policy_snapshot"  # ref: the directory
CHANGE_LOG_RETENTION = 86400.0  # seconds an entry is kept: a replica further behind reloads everything


def revocation_ref(kind: str, issuer: str, value: str) -> str:
    """A revocation's change-log ``ref``: JSON, as a value may hold any character."""
    return json.dumps([kind, issuer, value])


CHANGE_KINDS = (CHANGE_API_KEY, CHANGE_PRINCIPAL, CHANGE_REVOCATION, CHANGE_REVOCATIONS, CHANGE_CERTIFICATE,
                CHANGE_SIGNING_KEY, CHANGE_POLICY_SNAPSHOT)

# -- hot-path reads ---------------------------------------------------------------------


class ApiKeyLookup(Protocol):
    def find(self, fingerprint: str) -> ApiKeyMatch | None:
        """The key whose secret has this fingerprint, with its principal: one indexed read."""


class LastUseRecorder(Protocol):
    """A key's last use and its usage, noted in memory and written in batches (never a
    write per request), both by one background thread per process."""

    def record(self, key_id: str) -> None:
        """Note a key's use now: it was accepted (what ``authz keys list`` shows as last used)."""

    def count(self, key_id: str, allowed: bool, client_ip: IPAddress | None, route: str | None,
              deprecated: bool) -> None:
        """Count one request that presented the key, identified by its secret, whatever
        the verdict (``deprecated``: the key was rotated)."""

    def flush(self) -> None:
        """Write what is noted so far."""


class UserLookup(Protocol):
    def find_user(self, name: str) -> UserCredentials | None: ...

    def set_password(self, name: str, password_hash: str, *, expected_old: str | None = None) -> bool:
        """Replace a user's hash (with ``expected_old``: only if still the stored one, as
        a login's rehash must not undo a concurrent ``users passwd``)."""


class TokenRevocations(Protocol):
    def is_revoked(self, kind: str, value: str, issuer: str = ANY_ISSUER) -> bool:
        """Revoked for this issuer or for every issuer: one indexed read."""


class ReplayGuard(Protocol):
    """One-time values (a DPoP proof's ``jti``): the store remembers each until it
    expires, for every worker and replica at once, so a value is accepted only once."""

    def first_use(self, scope: str, value: str, expires_at: float) -> bool:
        """Record ``value`` in ``scope`` until ``expires_at``: True when it was not already
        recorded (or its record had expired), False for a replay. One write."""


class CertificateLookup(Protocol):
    def check(self, fingerprint: str, issuer_dn: str, serial_hex: str) -> CertificateStatus:
        """Revocation and registration of one certificate, in one indexed read."""

    def is_revoked(self, fingerprint: str, issuer_dn: str, serial_hex: str) -> bool:
        """Revoked by fingerprint, or by issuer and serial number."""


class SigningKeySource(Protocol):
    def active(self) -> IdentitySigningKey | None:
        """The newest unretired key: the one to sign with."""

    def published(self) -> list[dict]:
        """The public JWKs still to publish, newest first."""


class PolicySnapshots(Protocol):
    def save(self, revision: str, directory: str, files: dict[str, bytes], keep: int) -> None:
        """Record a good revision as the newest for its directory, keeping the ``keep``
        newest snapshots in all."""

    def latest_revision(self, directory: str) -> str | None:
        """The newest good revision's id alone (no file contents)."""

    def latest(self, directory: str) -> PolicySnapshot | None: ...


class ChangeFeed(Protocol):
    """The change log: every write that changes what a replica serves appends an entry
    in its own transaction. Ids only grow and are handed out in commit order (writers
    that append are serialized), so following ``since(last)`` misses no entry."""

    def latest(self) -> int:
        """The newest entry's id (0 when there is none)."""

    def since(self, after: int, limit: int = 1000) -> list[Change]:
        """Entries with an id above ``after``, oldest first, at most ``limit``."""


class WebhookOutbox(Protocol):
    """Events to send to the operator's webhook, kept until delivered (``authz.webhooks``).

    At least once, by one deliverer at a time: ``claim`` leases due events to one caller
    (a transaction on SQLite, ``FOR UPDATE SKIP LOCKED`` on PostgreSQL), and only the
    holder of a lease (its ``token``) may settle an event; a lease that runs out (a
    deliverer killed mid-send) makes the event due again. Events are not serving state:
    no change-log entry.
    """

    def enqueue(self, events: list[NewWebhookEvent]) -> int:
        """Insert events due now, one transaction; an id already in the outbox is left as
        it is (producers dedupe by id). Returns how many were new."""

    def cursor(self, name: str) -> float | None:
        """Up to when the producer ``name`` has looked (None: never)."""

    def advance(self, name: str, expected: float | None, to: float, events: list[NewWebhookEvent]) -> bool:
        """In one transaction: if ``name``'s cursor is still ``expected``, enqueue ``events``
        and move the cursor to ``to``; else write nothing and return False (another
        process looked at that span first)."""

    def has_due(self, now: float) -> bool:
        """Whether any event is due and not leased (a read: deliverers poll with it)."""

    def claim(self, now: float, lease_until: float, token: str, limit: int) -> list[WebhookEvent]:
        """Lease up to ``limit`` due events to ``token`` until ``lease_until``, oldest due first."""

    def delivered(self, event_id: str, token: str, at: float) -> bool:
        """The receiver took it (2xx); False when ``token`` no longer holds the lease."""

    def failed(self, event_id: str, token: str, at: float, error: str, retry_at: float | None) -> bool:
        """An attempt failed: due again at ``retry_at``, or given up (``failed``) when None."""

    def list(self, state: str | None = None, limit: int = 100) -> list[WebhookEvent]:
        """Newest first."""

    def counts(self) -> OutboxCounts: ...

    def prune(self, finished_before: float, pending_before: float) -> int:
        """Drop delivered and failed events finished before ``finished_before``, and
        pending ones created before ``pending_before`` (nobody delivers them); how many."""


class CredentialReads(Protocol):
    """What authenticators may ask (``authenticators.Context.store``)."""

    @property
    def keys(self) -> ApiKeyLookup: ...

    @property
    def last_used(self) -> LastUseRecorder: ...

    @property
    def principals(self) -> UserLookup: ...

    @property
    def revocations(self) -> TokenRevocations: ...

    @property
    def certificates(self) -> CertificateLookup: ...

    @property
    def nonces(self) -> ReplayGuard: ...


class ServingStore(CredentialReads, Protocol):
    """What a serving process needs besides: its own signing keys, policy snapshots, health."""

    @property
    def signing_keys(self) -> SigningKeySource: ...

    @property
    def policy_snapshots(self) -> PolicySnapshots: ...

    @property
    def changes(self) -> ChangeFeed: ...

    @property
    def outbox(self) -> WebhookOutbox:
        """Where events for the webhook go (anomalies are noticed while serving)."""

    @property
    def location(self) -> str:
        """Where the store is, as operators name it (for messages)."""

    def check_ready(self) -> None:
        """Raise ``StoreError`` unless the store exists at the current schema version."""

    def problem(self) -> str | None:
        """Why the store cannot serve now (checked afresh), or None: for ``/readyz``."""

    def close(self) -> None:
        """Release what the store holds open (connections, a pool, a follower thread):
        a start that failed, a test's end. What needs the store may be denied after."""


# -- admin: the tables' primitive writes ----------------------------------------------------


class ApiKeyTable(ApiKeyLookup, Protocol):
    def find_by_id(self, key_id: str) -> ApiKeyMatch | None:
        """The key without its secret (dry runs: ``authz policy explain --as-key``)."""

    def get(self, key_id: str) -> ApiKeyRecord | None: ...

    def fingerprints(self) -> list[str]:
        """Every key's fingerprint (what a replica's filter of possible keys is built from)."""

    def list(self, principal: str | None = None) -> list[ApiKeyRecord]:
        """Ordered by principal then creation (one principal's: by creation)."""

    def insert(self, key: NewApiKey) -> None:
        """Insert a key, creating its principal as a client if new."""

    def replace(self, old_id: str, new: NewApiKey, old_expires_at: float) -> bool:
        """Rotation in one transaction: insert ``new`` and deprecate ``old_id`` until
        ``old_expires_at``, pointing to it. False (nothing written) when ``old_id`` is gone,
        revoked or already replaced."""

    def revoke(self, key_id: str, at: float) -> bool:
        """Mark revoked (if not already); False when there is no such key."""

    def set_on_anomaly(self, key_id: str, on_anomaly: str) -> bool:
        """What an open anomaly does to the key (``allow``, ``deny``); False when there is no such key."""

    def touch(self, last_used: dict[str, float]) -> None:
        """Record last uses (key id → time), never moving one back."""

    def expiring(self, after: float, until: float) -> list[ApiKeyRecord]:
        """Keys not revoked whose expiry is in (``after``, ``until``], soonest first (indexed)."""

    def count_expiring(self, now: float, within: tuple[float, ...]) -> list[int]:
        """For each span in ``within`` (seconds), how many active keys expire in
        (``now``, ``now`` + span]: one indexed range count."""


class KeyUsageTable(Protocol):
    """Usage per key (``authz.store.usage_rows``): written in batches by serving
    processes; not serving state, so no change-log entry."""

    def add(self, usage: list[KeyUsage]) -> None:
        """In one transaction: hourly counts summed, each network's first sighting kept and
        its last raised (at most ``usage_rows.MAX_NETWORKS`` networks kept per key), the
        later last request kept, requests after the rotation summed."""

    def hours(self, key_id: str, since: float) -> list[UsageHour]:
        """Hours with requests from the one ``since`` falls in on, oldest first."""

    def networks(self, key_id: str) -> list[KeyNetwork]:
        """The client networks the key was presented from, first seen first."""

    def last_request(self, key_id: str) -> LastRequest | None: ...

    def last_requests(self) -> dict[str, LastRequest]:
        """Every key's latest request, by key id (listings)."""

    def prune(self, before: float) -> int:
        """Drop hours begun before the hour of ``before``, networks last seen and last
        requests made before it; how many rows went."""


class KeyAnomalyTable(Protocol):
    """Anomalies of API keys (``authz.store.anomaly_rows``): raised by serving processes
    as they write usage, listed and acknowledged by operators; not serving state, so no
    change-log entry."""

    def add(self, anomaly: KeyAnomaly) -> bool:
        """Insert unless its id is stored already (the same key, kind and span): True
        only for the one caller whose insert wrote the row."""

    def get(self, anomaly_id: str) -> KeyAnomaly | None: ...

    def since(self, at: float) -> list[KeyAnomaly]:
        """Anomalies raised at or after ``at``, newest first."""

    def open(self, key_id: str) -> list[KeyAnomaly]:
        """The key's anomalies nobody acknowledged yet, oldest first."""

    def ack(self, anomaly_id: str, at: float) -> bool:
        """Acknowledge (once); False when there is no such anomaly or it was acknowledged already."""


class PrincipalTable(UserLookup, Protocol):
    def add_user(self, name: str, password_hash: str | None, scopes: tuple[str, ...],
                 roles: tuple[str, ...]) -> None:
        """Insert a user; ``StoreError`` if the name is taken."""

    def set_disabled(self, name: str, disabled: bool) -> bool:
        """False when there is no principal of that name."""

    def list(self) -> list[Principal]: ...


class RevocationTable(TokenRevocations, Protocol):
    def add(self, revocation: Revocation, now: float) -> None:
        """Insert or widen (the later expiry wins; none beats any), purging what expired before ``now``."""

    def list(self, kind: str | None = None) -> list[Revocation]:
        """Oldest first."""

    def purge(self, now: float) -> int:
        """Drop revocations of credentials expired before ``now``; how many."""


class CertificateTable(CertificateLookup, Protocol):
    def register(self, certificate: RegisteredCertificate) -> str:
        """Register to its principal (created as a service if new); returns the principal's
        kind. ``StoreError`` if the fingerprint is registered already."""

    def list(self) -> list[RegisteredCertificate]:
        """Ordered by principal."""


class SigningKeyTable(SigningKeySource, Protocol):
    def install(self, key: NewIdentitySigningKey, publish_old_until: float) -> list[str]:
        """In one transaction: retire the active key(s), published until
        ``publish_old_until``; make ``key`` the active one; drop keys no longer published.
        Returns the retired kids."""

    def list(self) -> list[SigningKeyRecord]:
        """Newest first."""


class Store(ServingStore, Protocol):
    """Everything: reads, the tables' writes, and the schema."""

    @property
    def keys(self) -> ApiKeyTable: ...

    @property
    def principals(self) -> PrincipalTable: ...

    @property
    def revocations(self) -> RevocationTable: ...

    @property
    def certificates(self) -> CertificateTable: ...

    @property
    def signing_keys(self) -> SigningKeyTable: ...

    @property
    def usage(self) -> KeyUsageTable: ...

    @property
    def anomalies(self) -> KeyAnomalyTable: ...

    @property
    def url(self) -> str:
        """What ``open_store`` opens this store from again, a password included: never for
        messages (``location`` is for them)."""

    def migrate(self) -> tuple[int, int]:
        """Create or upgrade the schema; returns (old version, new version)."""

    def version(self) -> int: ...

    def dump(self, table: str) -> list[tuple]:
        """Every row of ``table`` (one of ``authz.store.copy.TABLES``), its columns in that
        order, by primary key: what ``authz db copy`` moves."""

    def load(self, table: str, rows: list[tuple]) -> None:
        """Insert rows as ``dump`` gives them, in one transaction (``authz db copy``)."""
