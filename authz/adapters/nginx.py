"""nginx ``auth_request`` (and ingress-nginx): ``GET /auth-request``.

The subrequest carries the original request in headers the nginx config sets:
``X-Original-Method``, ``X-Original-URI`` (or ingress-nginx's ``X-Original-URL``),
``X-Original-Host`` (else ``Host``), ``X-Real-IP`` / ``X-Forwarded-For``. Both
method and URI are required: without them authz cannot know what it is deciding,
so it denies (``bad_request``) rather than guess. The answer has no body (nginx never
shows it, and keeps its connection to authz only without one): the reason is in
``X-Auth-Reason``, the route in ``X-Auth-Route``.
"""

from __future__ import annotations

from authz.adapters import client_certs
from authz.adapters.common import Answer, request_headers, serve, wsgi_text
from authz.request import BadRequest, CheckRequest

PATH = "/auth-request"


def describe(environ: dict, settings, peer) -> CheckRequest:
    headers = request_headers(environ)
    method, url, target, original_host = headers.values_of(
        ("x-original-method", "x-original-url", "x-original-uri", "x-original-host"))
    if not method or not (target or url):
        raise BadRequest("X-Original-Method and X-Original-URI (or X-Original-URL) are required")
    client_ip = settings.trusted.client_ip(peer, headers.get("x-forwarded-for"), headers.get("x-real-ip"))
    certs = client_certs.from_headers(headers)
    if not target:  # ingress-nginx: the whole URL, whose host must be X-Original-Host's
        return CheckRequest.from_url(method, wsgi_text(url), headers, client_ip, certs, settings.target_allow,
                                     host=original_host)
    return CheckRequest.build(method, wsgi_text(target), wsgi_text(original_host or headers.get("host", "")),
                              headers.get("x-forwarded-proto", "http"), headers, client_ip, certs,
                              settings.target_allow)


def handle(state, environ: dict) -> Answer:
    # Headers only: nginx discards an auth subrequest's body unread, and a connection
    # with an unread body cannot be kept for the next subrequest.
    return serve(state, environ, describe, with_body=False)
