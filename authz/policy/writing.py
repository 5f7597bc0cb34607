"""Which scopes write: what a publishable (read-only) API key may not hold.

The policy says it through its routes, with nothing to declare beside them: a scope
**writes** when any route that admits an unsafe method requires it — a route whose
``methods`` are omitted (it matches every method) or name anything but GET, HEAD and
OPTIONS. A scope only routes limited to those methods require is read-only. This errs
towards "writes": a scope shared by a read route and a route open to every method
writes, and the operator who wants it on a publishable key limits that route's
methods. Every ``use`` leaf counts, whatever its authenticator: scope names are one
namespace, and a scope granted for reading must not open a write elsewhere.

``authz keys create --publishable`` refuses such a scope; the ``api_key`` authenticator
also refuses a publishable key on any unsafe method, whatever its scopes, so a policy
edited after the key was created cannot make it write either.
"""

from __future__ import annotations

from authz.policy.loader import CompiledPolicy
from authz.policy.routes import Route
from authz.request import SAFE_METHODS


def unsafe_methods(route: Route) -> str | None:
    """The unsafe methods a route admits, as a phrase ("every method", "POST, PUT"), or None."""
    if route.methods is None:
        return "every method"
    unsafe = route.methods - SAFE_METHODS
    return ", ".join(sorted(unsafe)) if unsafe else None


def writing_scopes(policy: CompiledPolicy) -> dict[str, str]:
    """Every writing scope, with why: the first route (in policy order) that makes it one."""
    found: dict[str, str] = {}
    for route in policy.routes.routes:
        methods = unsafe_methods(route)
        if methods is None:
            continue
        for leaf in route.requirement.leaves():
            for scope in sorted(leaf.scopes):
                found.setdefault(scope, f"route {route.id!r} in {route.file} requires it and admits {methods}")
    return found
