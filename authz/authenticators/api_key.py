"""``api_key``: keys from the credential store, read from ``X-API-Key`` or
``Authorization: ApiKey <key>`` (and the ``api_key`` query parameter only when the
authenticator says ``allow_query``, because URLs end up in logs).

Per request: one SHA-256 and one indexed read. A key is refused when revoked,
expired, of a disabled principal, of an environment this authenticator does not
accept, or used from outside its CIDR allowlist. Once its secret matched a stored key,
the outcome names that key (``Outcome.api_key``), refused or not: the request counts
in the key's usage (``authz keys usage``), which a wrong secret never touches.

**Publishable keys** (``pk_…``, meant for browser and mobile code) are taken only by an
authenticator with ``"publishable": true``, and such an authenticator takes nothing
else: a key of the other kind is left absent with the reason (another authenticator of
the route may own it, as a JWT of another issuer is left to the next ``jwt``; if none
does, the engine says why it was refused). A publishable key is used only from the
origins it was created for — the request's ``Origin`` header, read strictly
(``authz.credentials.origins``); missing, malformed or foreign is 403
``principal_not_allowed`` — and only for safe methods (``authz.request.SAFE_METHODS``):
it is read-only whatever the route. Its identity is always a client with the key's
scopes and no roles (a principal's roles are not lent to a public key).

**Signed requests** (``"signatures": "required"``, RFC 9421,
``authz.authenticators.message_signatures``): a key is accepted only with a valid,
fresh, unreplayed signature by the material it was created with (``keyid`` = the key's
id); a key without signing material is refused there. Without the option, a key that
can sign is taken as a plain key and any signature headers are ignored: signing is
what the route asks for, not a property that makes a key weaker elsewhere. The
signature is checked after every other check of the key, so a refused key never spends
a nonce. ``signature_max_age`` and ``signature_leeway`` bound ``created``. A refusal for
a signature reason asks for the signature wanted (RFC 9421 §5.1 ``Accept-Signature``,
naming the presented key); an unknown, revoked… key or one without signing material is
refused without it (nothing to sign with, and no key named that was not presented).

**Refused on anomaly.** A key created or updated with ``--on-anomaly deny`` that has an
anomaly nobody acknowledged (``authz.webhooks.anomalies``; the lookup reads it in the
same statement) is 403 ``principal_not_allowed``, the detail naming the anomaly.
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from functools import lru_cache
from urllib.parse import parse_qsl

from authz.authenticators import message_signatures
from authz.authenticators.base import AUTHORIZATION, QUERY, X_API_KEY, Authenticator, ConfigError, Context, Lint, quote
from authz.credentials import apikeys, origins
from authz.decision import Identity, IdentityKind, Outcome, Reason
from authz.request import SAFE_METHODS, CheckRequest, IPNetwork, in_networks
from authz.store.records import ApiKeyMatch


@lru_cache(maxsize=4096)
def _networks(cidrs: str) -> tuple[IPNetwork, ...]:
    """A key's allowlist (stored as space-separated CIDRs), parsed once per worker."""
    return tuple(ipaddress.ip_network(c) for c in cidrs.split())


_KINDS = {str(kind): kind for kind in IdentityKind}
_OTHER_KIND = {
    True: 'a publishable key (pk_): only an api_key authenticator with "publishable": true takes it',
    False: 'a secret key (sk_) is not taken by a "publishable" authenticator: it must never reach a browser',
}


def _origin_refusal(request: CheckRequest, match: ApiKeyMatch) -> str | None:
    """Why the request's ``Origin`` does not let this publishable key be used, or None."""
    value = request.headers.get("origin")
    if value is None:
        return (f"publishable API key {match.id} is accepted only from its browser origins, "
                "and the request has no Origin header")
    try:
        origin = origins.parse(value)
    except origins.OriginError as exc:
        return f"publishable API key {match.id}: the request's Origin is refused: {exc}"
    if origin not in origins.allowed(match.origins):
        return f"publishable API key {match.id} may not be used from origin {origin}"
    return None


def _anomaly_refusal(match: ApiKeyMatch) -> str:
    """A key created or updated with ``--on-anomaly deny`` that has an open anomaly."""
    kind, _, anomaly_id = (match.open_anomaly or "").partition(" ")
    return (f"API key {match.id} is refused on anomaly: {kind} ({anomaly_id}) is not acknowledged "
            f"(authz keys anomalies --ack {anomaly_id})")


class ApiKeyAuthenticator(Authenticator):
    type = "api_key"
    slots = (X_API_KEY, AUTHORIZATION, QUERY)  # X_API_KEY: the default ``header``

    @classmethod
    def lint(cls, config: dict) -> list[Lint]:
        found = []
        if config.get("allow_query"):
            found.append(Lint("allow_query", "API keys in the query string end up in access logs and browser "
                              "history; prefer the X-API-Key header"))
        for option in ("signature_max_age", "signature_leeway"):
            if option in config and config.get("signatures") != "required":
                found.append(Lint(option, 'has no effect without "signatures": "required"'))
        return found

    def __init__(self, name: str, config: dict, context: Context) -> None:
        super().__init__(name, config, context)
        self.header = config.get("header", X_API_KEY.header).lower()
        self.allow_query = bool(config.get("allow_query", False))
        self.environments = frozenset(config.get("environments", apikeys.ENVIRONMENTS))
        if not self.environments:
            raise ConfigError("environments", "must name at least one of live, test")
        self.realm = config.get("realm", name)
        self.publishable = bool(config.get("publishable", False))
        self.signatures: message_signatures.SignatureVerifier | None = None
        if config.get("signatures") == "required":
            if self.publishable:
                raise ConfigError("signatures", "publishable keys are public and cannot sign requests")
            self.signatures = message_signatures.SignatureVerifier(
                float(config.get("signature_max_age", message_signatures.DEFAULT_MAX_AGE)),
                float(config.get("signature_leeway", message_signatures.DEFAULT_LEEWAY)), context.store)

    def _presented(self, request: CheckRequest) -> list[tuple[str, str]]:
        found = []
        value = request.headers.get(self.header)
        if value:
            found.append((self.header, value.strip()))
        auth = request.headers.get(AUTHORIZATION.name)
        if auth and auth[:7].lower() == "apikey ":
            found.append((AUTHORIZATION.name, auth[7:].strip()))
        if self.allow_query and "api_key" in request.query:
            for key, value in parse_qsl(request.query, keep_blank_values=True):
                if key == "api_key":
                    found.append((QUERY.name, value))
        return found

    def authenticate(self, request: CheckRequest) -> Outcome:
        presented = self._presented(request)
        if not presented:
            return Outcome.absent()
        slot, key = presented[0]
        if any(value != key for _, value in presented[1:]):
            return Outcome.invalid(slot, "different API keys presented in one request")
        env = apikeys.parse(key)
        if env is None:
            return Outcome.invalid(slot, "malformed API key")
        publishable = apikeys.is_publishable(key)
        if publishable != self.publishable:
            return Outcome.absent(slot, _OTHER_KIND[publishable])
        if env not in self.environments:
            return Outcome.invalid(slot, f"{env} keys are not accepted here")
        fingerprint = apikeys.fingerprint(key)
        match = self.context.store.keys.find(fingerprint)
        if match is None or not hmac.compare_digest(match.hash, fingerprint):
            return Outcome.invalid(slot, "unknown API key")
        outcome = self._judge(request, slot, match, publishable)
        outcome.api_key = match  # identified: its usage counts this request, whatever the verdict
        return outcome

    def _judge(self, request: CheckRequest, slot: str, match: ApiKeyMatch, publishable: bool) -> Outcome:
        """The outcome for a key whose secret matched ``match``: always a fresh Outcome."""
        if match.status == "revoked":
            return Outcome.invalid(slot, f"API key {match.id} is revoked", Reason.CREDENTIAL_REVOKED)
        if match.principal_disabled:
            return Outcome.invalid(
                slot, f"principal of API key {match.id} is disabled", Reason.CREDENTIAL_REVOKED
            )
        if match.expires_at is not None and match.expires_at <= time.time():
            return Outcome.invalid(slot, f"API key {match.id} has expired", Reason.CREDENTIAL_EXPIRED)
        if match.allow_ips and not in_networks(request.client_ip, _networks(match.allow_ips)):
            return Outcome.invalid(
                slot, f"API key {match.id} may not be used from {request.client_ip or 'an unknown address'}",
                Reason.IP_NOT_ALLOWED,
            )
        if publishable:
            return self._publishable(request, slot, match)
        identity = Identity(id=match.principal, kind=_KINDS[match.kind], method=self.type,
                            authenticator=self.name, scopes=match.scopes, roles=match.roles, credential=match.id)
        if match.open_anomaly is not None:
            return Outcome.refused(slot, identity, _anomaly_refusal(match))
        if self.signatures is not None:
            try:
                self.signatures.check(request, match)
            except message_signatures.SignatureError as exc:
                refused = Outcome.invalid(slot, f"API key {match.id}: {exc}")
                if match.signing_alg is not None and match.signing_key is not None:  # a key that can sign
                    refused.accept_signature = message_signatures.accept_signature(request, match.id,
                                                                                   match.signing_alg)
                return refused
        self.context.store.last_used.record(match.id)
        return Outcome.valid(slot, identity)

    def _publishable(self, request: CheckRequest, slot: str, match: ApiKeyMatch) -> Outcome:
        """A publishable key that passed every check of a secret one: its kind as stored,
        its principal, its origins and the method decide."""
        if not match.publishable or match.kind != IdentityKind.CLIENT:
            # The prefix is hashed with the key, so only a store edited by hand gets here.
            return Outcome.invalid(slot, f"API key {match.id} is not stored as a client's publishable key")
        identity = Identity(id=match.principal, kind=IdentityKind.CLIENT, method=self.type,
                            authenticator=self.name, scopes=match.scopes, credential=match.id)
        refusal = _origin_refusal(request, match)
        if refusal is None and match.open_anomaly is not None:
            refusal = _anomaly_refusal(match)
        if refusal is None and request.method not in SAFE_METHODS:
            refusal = f"publishable API key {match.id} is read-only: {request.method} is not GET, HEAD or OPTIONS"
        if refusal is not None:
            return Outcome.refused(slot, identity, refusal)
        self.context.store.last_used.record(match.id)
        return Outcome.valid(slot, identity)

    def challenge(self, outcome: Outcome | None = None) -> str | None:
        return f"ApiKey realm={quote(self.realm)}"
