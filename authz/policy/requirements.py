"""Requirement trees (``use`` / ``any`` / ``all``) and their evaluation.

Each leaf asks its authenticator once per request (outcomes are memoised in the
``Evaluation``, so an authenticator named in several leaves runs once), then checks
the leaf's constraints. Constraints are checked after any cache, never baked in.

Results combine as docs/contract.md, "Requirements" says:
- ``any``: children in order, the first satisfied wins; an invalid credential denies
  at once (no silent fall-through to a weaker method); otherwise forbidden if some
  child was forbidden, else absent.
- ``all``: an invalid child denies; else any absent child makes the whole absent;
  else a forbidden child forbids; else the identities of all children combine.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from enum import Enum

from authz.authenticators import dpop as dpop_proofs
from authz.authenticators.base import Authenticator
from authz.decision import Identity, Outcome, OutcomeKind, Reason
from authz.observability import metrics
from authz.request import CheckRequest
from authz.store.records import ApiKeyMatch


class State(Enum):
    SATISFIED = "satisfied"
    ABSENT = "absent"
    INVALID = "invalid"
    FORBIDDEN = "forbidden"


@dataclass(slots=True)
class Result:
    state: State
    identities: list[Identity] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    reason: Reason | None = None
    detail: str = ""
    leaves: list[Leaf] = field(default_factory=list)
    missing_scopes: frozenset[str] = frozenset()


@dataclass
class TraceEntry:
    """One leaf's verdict, kept for explanations."""

    leaf: Leaf
    outcome: Outcome
    state: State
    detail: str


class Evaluation:
    """Per-request state: memoised authenticator outcomes, the API key identified (the
    first, if several authenticators identified one) and, when explaining, the trace."""

    __slots__ = ("api_key", "outcomes", "request", "trace")

    def __init__(self, request: CheckRequest, explain: bool = False) -> None:
        self.request = request
        self.outcomes: dict[str, Outcome] = {}
        self.trace: list[TraceEntry] | None = [] if explain else None
        self.api_key: ApiKeyMatch | None = None

    def outcome(self, authenticator: Authenticator) -> Outcome:
        outcome = self.outcomes.get(authenticator.name)
        if outcome is None:
            outcome = authenticator.authenticate(self.request)
            self.outcomes[authenticator.name] = outcome
            metrics.outcome(authenticator.name, authenticator.type, outcome.kind.value)
            if outcome.api_key is not None and self.api_key is None:
                self.api_key = outcome.api_key
        return outcome


class Requirement:
    pointer: str

    def evaluate(self, evaluation: Evaluation) -> Result:
        raise NotImplementedError

    def leaves(self) -> list[Leaf]:
        raise NotImplementedError


@dataclass(eq=False)
class Leaf(Requirement):
    authenticator: Authenticator
    pointer: str
    scopes: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()
    principals: tuple[str, ...] = ()
    bind_certificate: bool = False
    dpop: str | None = None  # RFC 9449 on a jwt leaf: "required", "allowed", or None (DPoP-bound tokens refused)
    dpop_nonce: str | None = None  # "required": DPoP proofs must carry a server nonce (RFC 9449 §9)
    _principal_patterns: tuple[re.Pattern[str], ...] = ()

    def __post_init__(self) -> None:
        # fnmatch: '*' also crosses '/', so spiffe://corp/ns/payments/* covers …/sa/api.
        self._principal_patterns = tuple(
            re.compile(fnmatch.translate(glob)) for glob in self.principals
        )

    def leaves(self) -> list[Leaf]:
        return [self]

    def evaluate(self, evaluation: Evaluation) -> Result:
        if self.dpop_nonce:
            dpop_proofs.require_nonce(evaluation.request)
        outcome = evaluation.outcome(self.authenticator)
        result = self._judge(outcome)
        if evaluation.trace is not None:
            evaluation.trace.append(TraceEntry(self, outcome, result.state, result.detail))
        return result

    def _judge(self, outcome: Outcome) -> Result:
        if outcome.kind is OutcomeKind.ABSENT:
            return Result(State.ABSENT, leaves=[self], detail=f"no credential for {self.authenticator.name}")
        if outcome.kind is OutcomeKind.INVALID:
            return Result(State.INVALID, reason=outcome.reason, detail=outcome.detail, leaves=[self])
        identity = outcome.identity
        methods = [self.authenticator.type]
        if identity is None:
            return Result(State.SATISFIED, methods=methods)
        if self.bind_certificate and identity.x5t is None:
            return Result(State.INVALID, reason=Reason.CREDENTIALS_INVALID, leaves=[self],
                          detail="this route needs a certificate-bound token (cnf.x5t#S256)")
        if identity.jkt is not None and self.dpop is None:
            return Result(State.INVALID, reason=Reason.CREDENTIALS_INVALID, leaves=[self],
                          detail="this route does not take DPoP-bound tokens")
        if self.dpop == "required" and identity.jkt is None:
            return Result(State.INVALID, reason=Reason.CREDENTIALS_INVALID, leaves=[self],
                          detail="this route needs a DPoP-bound token (Authorization: DPoP with a DPoP proof)")
        if self.dpop_nonce and identity.jkt is not None and outcome.dpop_nonce is None:
            # Only when another leaf of the route asked the same authenticator first.
            return Result(State.INVALID, reason=Reason.CREDENTIALS_INVALID, leaves=[self],
                          detail="this route needs DPoP proofs with a server nonce")
        if outcome.forbidden:
            return Result(State.FORBIDDEN, reason=outcome.reason, leaves=[self], detail=outcome.detail)
        missing = self.scopes - identity.scopes
        if missing:
            return Result(
                State.FORBIDDEN, reason=Reason.INSUFFICIENT_SCOPE, leaves=[self],
                detail=f"{identity.id} lacks scope(s) {' '.join(sorted(missing))}",
                missing_scopes=self.scopes,
            )
        if self.roles and not self.roles & identity.roles:
            return Result(
                State.FORBIDDEN, reason=Reason.PRINCIPAL_NOT_ALLOWED, leaves=[self],
                detail=f"{identity.id} has none of the roles {' '.join(sorted(self.roles))}",
            )
        if self._principal_patterns and not any(
            p.match(identity.id) for p in self._principal_patterns
        ):
            return Result(
                State.FORBIDDEN, reason=Reason.PRINCIPAL_NOT_ALLOWED, leaves=[self],
                detail=f"{identity.id} is not among the allowed principals",
            )
        return Result(State.SATISFIED, identities=[identity, *outcome.also], methods=methods)


    def challenges(self, outcome: Outcome | None) -> list[str]:
        """The ``WWW-Authenticate`` values of a 401 for this leaf: its authenticator's,
        and on a ``dpop`` leaf the ``DPoP`` one (alone where DPoP is required). A failure
        is told in the challenge of the scheme it concerns (RFC 9449 §7.1-7.2)."""
        authenticator = self.authenticator
        if self.dpop is None or not hasattr(authenticator, "dpop_challenge"):
            challenge = authenticator.challenge(outcome)
            return [challenge] if challenge else []
        on_dpop = outcome is not None and (outcome.dpop_error is not None or self.dpop == "required")
        found = []
        if self.dpop == "allowed":
            challenge = authenticator.challenge(None if on_dpop else outcome)
            if challenge:
                found.append(challenge)
        found.append(authenticator.dpop_challenge(outcome if on_dpop else None))
        return found

    def insufficient_scope_challenges(self, scopes: frozenset[str]) -> list[str]:
        """The ``WWW-Authenticate`` values of a 403 for missing scopes."""
        if self.dpop == "required" and hasattr(self.authenticator, "dpop_insufficient_scope_challenge"):
            return [self.authenticator.dpop_insufficient_scope_challenge(scopes)]
        challenge = self.authenticator.insufficient_scope_challenge(scopes)
        return [challenge] if challenge else []


@dataclass(eq=False)
class Branch(Requirement):
    children: list[Requirement]
    pointer: str

    def leaves(self) -> list[Leaf]:
        return [leaf for child in self.children for leaf in child.leaves()]


class AnyOf(Branch):
    def evaluate(self, evaluation: Evaluation) -> Result:
        forbidden: Result | None = None
        absent: list[Leaf] = []
        for child in self.children:
            result = child.evaluate(evaluation)
            if result.state in (State.SATISFIED, State.INVALID):
                return result
            if result.state is State.FORBIDDEN:
                forbidden = forbidden or result
            else:
                absent.extend(result.leaves)
        if forbidden is not None:
            return forbidden
        return Result(State.ABSENT, leaves=absent, detail="none of the accepted credentials was presented")


class AllOf(Branch):
    def evaluate(self, evaluation: Evaluation) -> Result:
        results = []
        for child in self.children:
            result = child.evaluate(evaluation)
            if result.state is State.INVALID:
                return result
            results.append(result)
        absent = [leaf for r in results if r.state is State.ABSENT for leaf in r.leaves]
        if absent:
            names = ", ".join(dict.fromkeys(leaf.authenticator.name for leaf in absent))
            return Result(State.ABSENT, leaves=absent, detail=f"also required: {names}")
        for result in results:
            if result.state is State.FORBIDDEN:
                return result
        combined = Result(State.SATISFIED)
        certificates = {i.x5t for r in results for i in r.identities if i.method == "mtls" and i.x5t}
        for result in results:
            for identity in result.identities:
                if identity.method != "mtls" and identity.x5t and certificates and identity.x5t not in certificates:
                    # RFC 8705: the token names another certificate than the one verified here.
                    return Result(State.INVALID, reason=Reason.CREDENTIALS_INVALID, leaves=result.leaves,
                                  detail="token is bound to another client certificate")
        for result in results:
            for identity in result.identities:
                if identity not in combined.identities:
                    combined.identities.append(identity)
            for method in result.methods:
                if method not in combined.methods:
                    combined.methods.append(method)
        return combined
