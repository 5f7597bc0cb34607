"""The decision pipeline: route match, requirement tree, verdict.

``DecisionEngine.decide`` never raises and never allows on error: any exception
inside an authenticator becomes a 500 ``internal_error`` deny. Given a ``Trace`` it
also records what it evaluated (the policy, the route, each leaf's verdict), so that an
explanation describes the very run that decided: authenticators run once, never again
for the telling.
"""

from __future__ import annotations

import dataclasses
import logging

from authz.authenticators import CREDENTIAL_SLOTS, NON_HEADER_SLOTS
from authz.authenticators.base import COOKIE, QUERY
from authz.decision import Decision, OutcomeKind, Reason
from authz.engine.identity_token import IdentitySigner
from authz.policy import CompiledPolicy, preflight
from authz.policy.requirements import Evaluation, Result, State, TraceEntry
from authz.policy.routes import Route
from authz.request import CheckRequest
from authz.store import StoreUnavailable, StoreUnreachable

log = logging.getLogger("authz.engine")


@dataclasses.dataclass
class Trace:
    """What one ``decide`` evaluated for the request as given (not its other readings):
    the policy revision it read, the route that matched (None: no route), and each
    requirement leaf's verdict in evaluation order."""

    policy: CompiledPolicy | None = None
    route: Route | None = None
    entries: list[TraceEntry] = dataclasses.field(default_factory=list)
    # A CORS preflight: (the method it announced, the id of the route that decides the
    # announced request or None, whether that route allowed the preflight).
    preflight: tuple[str, str | None, bool] | None = None


class DecisionEngine:
    def __init__(self, policy: CompiledPolicy, signer: IdentitySigner | None = None,
                 token_everywhere: bool = False) -> None:
        # Replaced whole on reload: a request reads this attribute once and keeps
        # that revision to the end, so it never sees a half-loaded policy.
        self.policy = policy
        self.signer = signer
        self.token_everywhere = token_everywhere

    def decide(self, request: CheckRequest, trace: Trace | None = None) -> Decision:
        """The decision for ``request``. A request an upstream may read another way (a
        method override, a lower-case method, HEAD, a trailing slash: see
        ``CheckRequest.other_readings``) must be allowed in every reading; the first
        deny answers. ``trace``, when given, is filled with the evaluation of the
        request as given (the one an explanation shows)."""
        decision = self._decide(request, trace)
        if not request.other_readings or not decision.allowed:
            return decision
        for method, path in request.other_readings:
            other = self._decide(dataclasses.replace(request, method=method, path=path, other_readings=()))
            if not other.allowed:
                other.detail = f"read as {method} {path}: {other.detail}"
                return other
        return decision

    def _decide(self, request: CheckRequest, trace: Trace | None = None) -> Decision:
        policy = self.policy
        if request.method == "OPTIONS":
            allowed = self._preflight(policy, request, trace)
            if allowed is not None:
                return allowed
        route = policy.routes.match(request)
        if trace is not None:
            trace.policy, trace.route = policy, route
        if route is None:
            return Decision.deny(
                403, Reason.NO_ROUTE, f"no route matches {request.method} {request.host}{request.path}",
                revision=policy.revision,
            )
        evaluation = Evaluation(request, explain=trace is not None)
        if trace is not None:
            trace.entries = evaluation.trace  # type: ignore[assignment]  (a list when explaining)
        try:
            result = route.requirement.evaluate(evaluation)
            decision = _verdict(route, result, evaluation, policy.revision)
            decision.api_key = evaluation.api_key
            if decision.allowed:
                self._finish(route, decision, evaluation)
        except StoreUnreachable:
            # A database on another machine, or a replica past its staleness bound: an
            # upstream's failure (logged once per episode by the store).
            return Decision.deny(500, Reason.UPSTREAM_UNAVAILABLE, "credential store unavailable", route.id,
                                 policy.revision)
        except StoreUnavailable:
            # Logged once per episode by the store, not as a traceback per request.
            return Decision.deny(500, Reason.INTERNAL_ERROR, "credential store unavailable", route.id,
                                 policy.revision)
        except Exception:
            log.exception("internal error deciding route %s", route.id)
            return Decision.deny(500, Reason.INTERNAL_ERROR, "internal error", route.id, policy.revision)
        return decision

    def _preflight(self, policy: CompiledPolicy, request: CheckRequest, trace: Trace | None) -> Decision | None:
        """The allow of a CORS preflight whose deciding route says ``"preflight": "allow"``
        (``policy/preflight.py``); None to decide the request as any other."""
        found = preflight.deciding_route(policy.routes, request)
        if found is None:
            return None
        method, route = found
        allowed = preflight.allows(route)
        if trace is not None:
            trace.preflight = (method, route.id if route is not None else None, allowed)
        if not allowed or route is None:
            return None
        if trace is not None:
            trace.policy, trace.route = policy, route
        decision = Decision(allowed=True, status=200, route=route.id, methods=[preflight.METHOD],
                            policy_revision=policy.revision)
        if self.signer is not None and (self.token_everywhere or route.options.get("identity_token")):
            try:
                decision.identity_token = self.signer.sign(decision)
            except Exception:
                log.exception("internal error signing the identity of a preflight on route %s", route.id)
                return Decision.deny(500, Reason.INTERNAL_ERROR, "internal error", route.id, policy.revision)
        return decision

    def _finish(self, route: Route, decision: Decision, evaluation: Evaluation) -> None:
        """Route options of an allow: the signed identity, credential headers to strip."""
        if self.signer is not None and (self.token_everywhere or route.options.get("identity_token")):
            decision.identity_token = self.signer.sign(decision)
        if route.options.get("strip_credentials"):
            slots = {o.slot for o in evaluation.outcomes.values() if o.kind is OutcomeKind.VALID and o.slot}
            decision.strip_headers = sorted(s for s in slots if s not in NON_HEADER_SLOTS)


def _verdict(route: Route, result: Result, evaluation: Evaluation, revision: str) -> Decision:
    decision = _judged(route, result, evaluation, revision)
    # RFC 9449 §9: the client's next proof needs a nonce: on the allow as on the refusal.
    decision.dpop_nonce = next((o.dpop_nonce for o in evaluation.outcomes.values() if o.dpop_nonce), None)
    return decision


def _judged(route: Route, result: Result, evaluation: Evaluation, revision: str) -> Decision:
    if result.state is State.SATISFIED:
        return Decision(
            allowed=True, status=200, route=route.id, identities=result.identities,
            methods=result.methods, policy_revision=revision,
        )
    if result.reason is Reason.UPSTREAM_UNAVAILABLE:
        # Not the client's fault and nothing it can fix: an internal failure, denied.
        return Decision.deny(500, Reason.UPSTREAM_UNAVAILABLE, result.detail, route.id, revision)
    decision = Decision.deny(
        403 if result.state is State.FORBIDDEN else 401,
        result.reason or Reason.CREDENTIALS_MISSING, result.detail, route.id, revision,
    )
    if result.state is State.FORBIDDEN:
        for leaf in result.leaves:
            decision.challenges += leaf.insufficient_scope_challenges(result.missing_scopes)
        return decision
    if result.state is State.ABSENT:
        unclaimed = _unclaimed(evaluation)
        if unclaimed:
            where, why = unclaimed
            decision.reason = Reason.CREDENTIALS_INVALID
            decision.detail = f"the credential in {where} is not accepted on route {route.id}"
            if why:
                decision.detail += f": {why}"
        leaves = result.leaves
    else:
        failed = result.leaves[0]
        outcome = evaluation.outcomes[failed.authenticator.name]
        decision.challenges += failed.challenges(outcome)
        decision.accept_signature = outcome.accept_signature  # beside the refusing leaf's challenge
        leaves = [leaf for leaf in route.requirement.leaves() if leaf.authenticator is not failed.authenticator]
    for leaf in leaves:
        for challenge in leaf.challenges(None):
            if challenge not in decision.challenges:
                decision.challenges.append(challenge)
    return decision


def _unclaimed(evaluation: Evaluation) -> tuple[str, str] | None:
    """Where a credential no authenticator of the route claimed was presented, and why
    when one saw it and left it to others (a key of the other kind); None if nowhere."""
    outcomes = evaluation.outcomes.values()
    claimed = {o.slot for o in outcomes if o.kind is not OutcomeKind.ABSENT}
    for o in outcomes:
        if o.kind is OutcomeKind.ABSENT and o.slot and o.slot not in claimed:
            if o.slot in (QUERY.name, COOKIE.name):
                where = "the query string" if o.slot == QUERY.name else "a cookie"
            else:
                where = f"the {CREDENTIAL_SLOTS.get(o.slot, o.slot)} header"
            return where, o.detail
    headers = evaluation.request.headers
    for slot, header in CREDENTIAL_SLOTS.items():
        if slot not in claimed and headers.get(slot):
            return f"the {header} header", ""
    return None
