"""What the bearer-token authenticators (``jwt``, ``oauth2_introspection``) share:
reading ``Authorization: Bearer``, claim values, and RFC 6750 challenges."""

from __future__ import annotations

from authz.authenticators.base import AUTHORIZATION, quote
from authz.decision import Outcome, Reason
from authz.request import CheckRequest

SLOT = AUTHORIZATION.name


def bearer_token(request: CheckRequest) -> str | None:
    """The token of ``Authorization: Bearer <token>``, or None for any other scheme."""
    header = request.headers.get(SLOT)
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip()


def presented_token(request: CheckRequest) -> tuple[str, str] | None:
    """(scheme, token) of ``Authorization: Bearer <token>`` or ``Authorization: DPoP
    <token>`` (RFC 9449 §7.1), the scheme lower-cased; None for any other scheme."""
    header = request.headers.get(SLOT)
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    scheme = scheme.lower()
    if scheme not in ("bearer", "dpop"):
        return None
    return scheme, token.strip()


def as_tokens(value: object) -> frozenset[str]:
    """A space-separated string or a list of strings, as a set."""
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(v for v in value if isinstance(v, str))
    return frozenset()


def token_layers(subject: object, client_id: object, subject_may_be_client: bool = True) -> tuple[str | None,
                                                                                                  str | None]:
    """(user, client) a bearer token proves, by RFC 9068 §2.2: ``client_id`` names the
    client; a subject equal to it (a client-credentials token) is that client, not a
    user. Either is None when absent (not a non-empty string). ``subject_may_be_client``
    is False when the principal is read from another claim than ``sub``."""
    client = client_id if isinstance(client_id, str) and client_id else None
    user = subject if isinstance(subject, str) and subject else None
    if user is not None and subject_may_be_client and user == client:
        user = None
    return user, client


def description(text: str) -> str:
    """RFC 6750 error_description: printable ASCII without quote or backslash."""
    return "".join(c for c in text if " " <= c <= "~" and c not in '"\\')[:200]


class BearerChallenges:
    """RFC 6750 §3: no error when no token came, ``invalid_token`` when one failed,
    ``insufficient_scope`` with the needed scopes on 403. RFC 9449 §7.1 the same for the
    ``DPoP`` scheme, with the proof algorithms accepted (``algs``) and
    ``invalid_dpop_proof`` when the proof failed."""

    realm: str
    dpop_algorithms: tuple[str, ...] = ()

    def dpop_challenge(self, outcome: Outcome | None = None) -> str:
        value = f'DPoP realm={quote(self.realm)}, algs="{" ".join(self.dpop_algorithms)}"'
        if outcome is not None and outcome.reason is not Reason.UPSTREAM_UNAVAILABLE:
            value += (f', error="{outcome.dpop_error or "invalid_token"}", '
                      f'error_description="{description(outcome.detail)}"')
        return value

    def dpop_insufficient_scope_challenge(self, scopes: frozenset[str]) -> str:
        return (f'DPoP realm={quote(self.realm)}, algs="{" ".join(self.dpop_algorithms)}", '
                f'error="insufficient_scope", scope="{description(" ".join(sorted(scopes)))}"')

    def challenge(self, outcome: Outcome | None = None) -> str | None:
        value = f"Bearer realm={quote(self.realm)}"
        if outcome is not None and outcome.reason is not Reason.UPSTREAM_UNAVAILABLE:
            value += f', error="invalid_token", error_description="{description(outcome.detail)}"'
        return value

    def insufficient_scope_challenge(self, scopes: frozenset[str]) -> str | None:
        return (f'Bearer realm={quote(self.realm)}, error="insufficient_scope", '
                f'scope="{description(" ".join(sorted(scopes)))}"')
