"""Traefik ``forwardAuth`` and Caddy ``forward_auth``: ``/forward-auth``.

Both send a GET (Traefik keeps the method only with ``preserveRequestMethod``) with
the original request in ``X-Forwarded-Method``, ``X-Forwarded-Uri`` (path?query),
``X-Forwarded-Host``, ``X-Forwarded-Proto`` and ``X-Forwarded-For``, every client
header passed through. Any 2xx allows; the answer's ``X-Auth-*`` headers reach the
upstream through ``authResponseHeaders`` / ``copy_headers`` — all of them, empty where
the decision has no such layer (see ``blank_absent``).
"""

from __future__ import annotations

from authz.adapters import client_certs
from authz.adapters.common import Answer, request_headers, serve, unset_identity_headers, wsgi_text
from authz.decision import Decision
from authz.request import BadRequest, CheckRequest

PATH = "/forward-auth"


def describe(environ: dict, settings, peer) -> CheckRequest:
    headers = request_headers(environ)
    method = headers.get("x-forwarded-method") or environ.get("REQUEST_METHOD", "GET")
    target = headers.get("x-forwarded-uri")
    if not target:
        raise BadRequest("X-Forwarded-Uri is required")
    host = headers.get("x-forwarded-host") or headers.get("host", "")
    scheme = headers.get("x-forwarded-proto", "http")
    client_ip = settings.trusted.client_ip(peer, headers.get("x-forwarded-for"), None)
    return CheckRequest.build(method, wsgi_text(target), wsgi_text(host), scheme, headers, client_ip,
                              client_certs.from_headers(headers), settings.target_allow)


def blank_absent(decision: Decision) -> list[tuple[str, str]]:
    """Every identity header, empty where this decision sets none.

    Traefik's ``authResponseHeaders`` and Caddy's ``copy_headers`` only overwrite a
    client-sent header when the answer has it, and Caddy 2.6 even copies its own
    unexpanded placeholder for a missing one: an empty value clears both.
    """
    return [(h, "") for h in unset_identity_headers(decision)]


def handle(state, environ: dict) -> Answer:
    return serve(state, environ, describe, blank_absent)
