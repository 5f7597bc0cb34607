"""nginx ``auth_request`` (and ingress-nginx): ``GET /auth-request``.

The subrequest carries the original request in headers the nginx config sets:
``X-Original-Method``, ``X-Original-URI`` (or ingress-nginx's ``X-Original-URL``),
``X-Original-Host`` (else ``Host``), ``X-Real-IP`` / ``X-Forwarded-For``. Both
method and URI are required: without them authz cannot know what it is deciding,
so it denies (``bad_request``) rather than guess.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, current_app, request

from authz.adapters.common import check_peer, headers_from_environ, render
from authz.decision import Decision, Reason
from authz.request import BadRequest, CheckRequest

blueprint = Blueprint("nginx", __name__)


def describe(environ: dict, client_ip) -> CheckRequest:
    headers = headers_from_environ(environ)
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
    return CheckRequest.build(method, target, host, scheme, headers, client_ip)


@blueprint.route("/auth-request", methods=["GET", "HEAD", "POST"], provide_automatic_options=False)
def auth_request():
    state = current_app.extensions["authz"]
    environ = request.environ
    peer, denied = check_peer(state.settings, environ)
    if denied:
        return render(denied)
    headers = request.headers
    client_ip = state.settings.trusted.client_ip(
        peer, headers.get("X-Forwarded-For"), headers.get("X-Real-IP")
    )
    try:
        check = describe(environ, client_ip)
    except BadRequest as exc:
        return render(Decision.deny(403, Reason.BAD_REQUEST, str(exc)))
    return render(state.engine.decide(check))
