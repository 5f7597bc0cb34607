"""``authz policy explain`` and ``"explain": true``: which route matched and why the
others did not, each requirement leaf's outcome, and the decision in one plain line."""

from __future__ import annotations

import dataclasses

from authz.decision import Decision, Reason
from authz.engine.decide import DecisionEngine, Trace
from authz.policy import preflight
from authz.policy.requirements import State
from authz.request import CheckRequest

CAUSES = {
    Reason.NO_ROUTE: "No route in the policy matches this method, host and path.",
    Reason.CREDENTIALS_MISSING: "The route needs a credential and none was presented.",
    Reason.CREDENTIALS_INVALID: "A credential was presented but it is wrong or not accepted on this route.",
    Reason.CREDENTIAL_EXPIRED: "The credential has expired.",
    Reason.CREDENTIAL_REVOKED: "The credential (or its owner) has been revoked or disabled.",
    Reason.INSUFFICIENT_SCOPE: "The caller is known but lacks a scope the route requires.",
    Reason.PRINCIPAL_NOT_ALLOWED: "The caller is known but is not one the route admits (role or principal).",
    Reason.IP_NOT_ALLOWED: "The API key may not be used from this client address.",
    Reason.UNTRUSTED_PROXY: "The request did not come from a trusted proxy.",
    Reason.UPSTREAM_UNAVAILABLE: "The identity provider (JWKS or introspection) could not be reached.",
    Reason.BAD_REQUEST: "The request cannot be described safely (e.g. an unsafe path).",
    Reason.INTERNAL_ERROR: "authz failed internally; it denied to stay safe.",
}
_WHY = {"method": "method {method} not in {methods}", "host": "host {host} not in {hosts}",
        "path": "path {path} does not match {paths}"}


def summary(decision: Decision) -> str:
    """One line a newcomer understands."""
    if decision.allowed and decision.methods == [preflight.METHOD]:
        return f"ALLOW ({decision.status}) a CORS preflight, without credentials, on route {decision.route}"
    if decision.allowed:
        principal = decision.principal
        who = f"{principal.id} ({principal.kind})" if principal else "anonymous"
        return f"ALLOW ({decision.status}) as {who} via {', '.join(decision.methods)} on route {decision.route}"
    cause = CAUSES.get(decision.reason, "") if decision.reason else ""
    detail = f" ({decision.detail})" if decision.detail else ""
    return f"DENY ({decision.status} {decision.reason}): {cause}{detail}"


def explain(engine: DecisionEngine, request: CheckRequest) -> tuple[Decision, dict]:
    """The decision and, for a person, how it was reached: one ``decide`` with a trace
    (each authenticator runs once, as on the hot path), then the routes tried before
    the match and every leaf of its requirement, those not evaluated included."""
    trace = Trace()
    decision = engine.decide(request, trace)
    routes = []
    # A preflight let through was decided by the route of the announced request: show
    # the routes as that request met them.
    matched = request
    if trace.preflight is not None and trace.preflight[2]:
        matched = dataclasses.replace(request, method=trace.preflight[0], other_readings=())
    for route in trace.policy.routes.routes if trace.policy is not None else ():
        why = route.mismatch(matched)
        spec = {"methods": sorted(route.methods) if route.methods else "any",
                "hosts": "listed hosts" if route.hosts else "any", "paths": "its path patterns"}
        routes.append({"id": route.id, "file": route.file, "matched": why is None,
                       "why": None if why is None else _WHY[why].format(method=matched.method, host=request.host,
                                                                        path=request.path, **spec)})
        if why is None:
            break
    requirement = []
    if trace.route is not None:
        seen = {id(entry.leaf) for entry in trace.entries}
        for entry in trace.entries:
            outcome = entry.outcome
            requirement.append({"pointer": entry.leaf.pointer, "authenticator": entry.leaf.authenticator.name,
                                "type": entry.leaf.authenticator.type, "outcome": outcome.kind.value,
                                "state": entry.state.value, "reason": str(outcome.reason) if outcome.reason else None,
                                "detail": entry.detail or outcome.detail or None,
                                "principal": outcome.identity.id if outcome.identity else None})
        for leaf in trace.route.requirement.leaves():
            if id(leaf) not in seen:
                requirement.append({"pointer": leaf.pointer, "authenticator": leaf.authenticator.name,
                                    "type": leaf.authenticator.type, "outcome": None, "state": "not evaluated",
                                    "reason": None, "detail": "an earlier alternative decided", "principal": None})
    explanation = {"summary": summary(decision), "routes": routes, "requirement": requirement}
    if trace.preflight is not None:
        method, route_id, allowed = trace.preflight
        explanation["preflight"] = {"method": method, "route": route_id, "allowed": allowed}
    return decision, explanation


def _preflight_line(found: dict) -> str:
    """How a CORS preflight was decided, in one line."""
    head = f"preflight: OPTIONS announcing {found['method']}"
    if found["allowed"]:
        return f"{head}: route {found['route']} (\"preflight\": \"allow\") lets it through without credentials"
    if found["route"] is None:
        return f"{head}: no route takes {found['method']} here; decided as a plain OPTIONS"
    return f"{head}: route {found['route']} does not allow preflights; decided as a plain OPTIONS"


def render_text(decision: Decision, explanation: dict) -> str:
    lines = [_preflight_line(explanation["preflight"])] if explanation.get("preflight") else []
    lines.append("routes:")
    for route in explanation["routes"]:
        mark = "→" if route["matched"] else " "
        lines.append(f"  {mark} {route['id']:<20} " + ("matched" if route["matched"] else f"skipped: {route['why']}"))
    if explanation["requirement"]:
        lines.append("requirement:")
        for leaf in explanation["requirement"]:
            mark = {State.SATISFIED.value: "✓", "not evaluated": "·"}.get(leaf["state"], "✗")
            text = f"  {mark} {leaf['pointer']}  {leaf['authenticator']} ({leaf['type']}): {leaf['state']}"
            if leaf["principal"]:
                text += f", {leaf['principal']}"
            if leaf["detail"]:
                text += f" — {leaf['detail']}"
            lines.append(text)
    lines.append(f"decision: {explanation['summary']}")
    return "\n".join(lines)
