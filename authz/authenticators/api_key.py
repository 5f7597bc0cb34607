"""``api_key``: keys from the credential store, read from ``X-API-Key`` or
``Authorization: ApiKey <key>`` (and the ``api_key`` query parameter only when the
authenticator says ``allow_query``, because URLs end up in logs).

Per request: one SHA-256 and one indexed read. A key is refused when revoked,
expired, of a disabled principal, of an environment this authenticator does not
accept, or used from outside its CIDR allowlist.
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from functools import lru_cache
from urllib.parse import parse_qsl

from authz.authenticators.base import AUTHORIZATION, QUERY, X_API_KEY, Authenticator, ConfigError, Context, Lint, quote
from authz.credentials import apikeys
from authz.decision import Identity, IdentityKind, Outcome, Reason
from authz.request import CheckRequest, IPNetwork, in_networks


@lru_cache(maxsize=4096)
def _networks(cidrs: str) -> tuple[IPNetwork, ...]:
    """A key's allowlist (stored as space-separated CIDRs), parsed once per worker."""
    return tuple(ipaddress.ip_network(c) for c in cidrs.split())


_KINDS = {str(kind): kind for kind in IdentityKind}


class ApiKeyAuthenticator(Authenticator):
    type = "api_key"
    slots = (X_API_KEY, AUTHORIZATION, QUERY)  # X_API_KEY: the default ``header``

    @classmethod
    def lint(cls, config: dict) -> list[Lint]:
        if config.get("allow_query"):
            return [Lint("allow_query", "API keys in the query string end up in access logs and browser history; "
                         "prefer the X-API-Key header")]
        return []

    def __init__(self, name: str, config: dict, context: Context) -> None:
        super().__init__(name, config, context)
        self.header = config.get("header", X_API_KEY.header).lower()
        self.allow_query = bool(config.get("allow_query", False))
        self.environments = frozenset(config.get("environments", apikeys.ENVIRONMENTS))
        if not self.environments:
            raise ConfigError("environments", "must name at least one of live, test")
        self.realm = config.get("realm", name)

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
        if env not in self.environments:
            return Outcome.invalid(slot, f"{env} keys are not accepted here")
        fingerprint = apikeys.fingerprint(key)
        match = self.context.store.keys.find(fingerprint)
        if match is None or not hmac.compare_digest(match.hash, fingerprint):
            return Outcome.invalid(slot, "unknown API key")
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
        self.context.store.last_used.record(match.id)
        return Outcome.valid(slot, Identity(
            id=match.principal, kind=_KINDS[match.kind], method=self.type,
            authenticator=self.name, scopes=match.scopes, roles=match.roles, credential=match.id,
        ))

    def challenge(self, outcome: Outcome | None = None) -> str | None:
        return f"ApiKey realm={quote(self.realm)}"
