"""CORS preflights: which route decides one, and whether it lets it through.

A browser asks before a cross-origin request it may not simply send: ``OPTIONS`` with
``Origin`` and ``Access-Control-Request-Method`` (the method it means to use), never
with credentials (Fetch standard, "CORS-preflight request"). A route that needs
credentials would refuse that question, and the real request would never be sent.

A route with ``"preflight": "allow"`` lets such a question through without credentials.
The route that decides is the one that would decide the announced request: the first
route, in policy order, matching the request's host and path **with the announced
method** (found by the same ``RouteTable.match`` as every request, so the index and the
linear scan agree). Only when that route says ``"preflight": "allow"`` is the
``OPTIONS`` allowed, as ``X-Auth-Methods: preflight`` with no principal. Everything
else — a plain ``OPTIONS``, one without ``Origin``, an announced method that is not one
RFC 9110 token (or several), a method no route with ``"preflight": "allow"`` takes
there — is decided as any request, by the route matching ``OPTIONS``.

The headers are the original request's as the trusted door reported them. Allowing a
preflight lets the upstream answer it (its CORS headers); the request that follows is
decided on its own, with its own credentials.
"""

from __future__ import annotations

import dataclasses
import re

from authz.policy.routes import Route, RouteTable
from authz.request import CheckRequest

ALLOW = "allow"
METHOD = "preflight"  # what X-Auth-Methods says for an allowed preflight
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}")
MAX_ORIGIN = 2048


def announced_method(request: CheckRequest) -> str | None:
    """The method a well-formed CORS preflight announces, or None when ``request`` is
    no such preflight: not OPTIONS, no (or several) ``Origin``, or an
    ``Access-Control-Request-Method`` that is absent, several, or not a token."""
    if request.method != "OPTIONS":
        return None
    origin, method = request.headers.values_of(("origin", "access-control-request-method"))
    if not origin or not method or "," in origin or len(origin) > MAX_ORIGIN:
        return None
    method = method.strip(" \t")
    return method if _TOKEN.fullmatch(method) else None


def deciding_route(routes: RouteTable, request: CheckRequest) -> tuple[str, Route | None] | None:
    """For a preflight: (the announced method, the route that would decide the announced
    request, or None when none matches it); None when ``request`` is no preflight."""
    method = announced_method(request)
    if method is None:
        return None
    return method, routes.match(dataclasses.replace(request, method=method, other_readings=()))


def allows(route: Route | None) -> bool:
    """Whether ``route`` lets the preflights it decides through."""
    return route is not None and route.options.get("preflight") == ALLOW
