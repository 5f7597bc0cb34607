"""nginx ``auth_request`` (and ingress-nginx): ``GET /auth-request``.

The subrequest carries the original request in headers the nginx config sets:
``X-Original-Method``, ``X-Original-URI`` (or ingress-nginx's ``X-Original-URL``),
``X-Original-Host`` (else ``Host``), ``X-Real-IP`` / ``X-Forwarded-For``. Both
method and URI are required: without them authz cannot know what it is deciding,
so it denies (``bad_request``) rather than guess.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from authz.adapters import client_certs
from authz.adapters.common import Answer, request_headers, serve
from authz.request import BadRequest, CheckRequest

PATH = "/auth-request"


def describe(environ: dict, settings, peer) -> CheckRequest:
    headers = request_headers(environ)
    method = headers.get("x-original-method")
    url = headers.get("x-original-url")
    target = headers.get("x-original-uri")
    host = headers.get("x-original-host") or headers.get("host", "")
    scheme = headers.get("x-forwarded-proto", "http")
    if url and not target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise BadRequest("X-Original-URL is not an absolute http(s) URL")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host, scheme = parts.netloc, parts.scheme
    if not method or not target:
        raise BadRequest("X-Original-Method and X-Original-URI (or X-Original-URL) are required")
    client_ip = settings.trusted.client_ip(peer, headers.get("x-forwarded-for"), headers.get("x-real-ip"))
    return CheckRequest.build(method, target, host, scheme, headers, client_ip, client_certs.from_headers(headers))


def handle(state, environ: dict) -> Answer:
    return serve(state, environ, describe)
