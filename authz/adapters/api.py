"""``POST /v1/decisions``: the JSON decision API for scripts, tests and explain.

Body: ``{"method", "url" | "host" + "path", "headers": {}, "client_ip", "client_cert"}``.
The answer has the status of the decision (200/401/403) and the whole decision as
JSON; a malformed body is the caller's mistake and gets 400 ``bad_request``.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, current_app, request

from authz.adapters.common import check_peer, render
from authz.decision import Decision, Reason
from authz.request import BadRequest, CheckRequest, Headers, parse_ip

blueprint = Blueprint("api", __name__)
MAX_BODY = 256 * 1024


class InvalidBody(ValueError):
    """The JSON body does not describe a request (400, unlike an unsafe path: 403)."""


def describe(body: object) -> CheckRequest:
    if not isinstance(body, dict):
        raise InvalidBody("body must be a JSON object")
    method = body.get("method", "GET")
    headers = body.get("headers", {})
    if not isinstance(method, str) or not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise InvalidBody("'method' must be a string and 'headers' an object of strings")
    headers = Headers(headers)
    if "url" in body:
        if not isinstance(body["url"], str):
            raise InvalidBody("'url' must be a string")
        parts = urlsplit(body["url"])
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidBody("'url' must be an absolute http(s) URL")
        scheme, host = parts.scheme, parts.netloc
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    elif isinstance(body.get("path"), str):
        scheme, host, target = "http", body.get("host") or headers.get("host", ""), body["path"]
        if not isinstance(host, str):
            raise InvalidBody("'host' must be a string")
    else:
        raise InvalidBody("give 'url', or 'host' and 'path'")
    client_ip = None
    if body.get("client_ip") is not None:
        client_ip = parse_ip(body["client_ip"]) if isinstance(body["client_ip"], str) else None
        if client_ip is None:
            raise InvalidBody("'client_ip' is not an IP address")
    return CheckRequest.build(method, target, host, scheme, headers, client_ip)


@blueprint.route("/v1/decisions", methods=["POST"], provide_automatic_options=False)
def decisions():
    state = current_app.extensions["authz"]
    _, denied = check_peer(state.settings, request.environ)
    if denied:
        return render(denied, denied.to_json())
    if (request.content_length or 0) > MAX_BODY:
        decision = Decision.deny(400, Reason.BAD_REQUEST, f"body larger than {MAX_BODY} bytes")
        return render(decision, decision.to_json())
    try:
        check = describe(request.get_json(force=True, silent=True))
    except InvalidBody as exc:
        decision = Decision.deny(400, Reason.BAD_REQUEST, str(exc))
        return render(decision, decision.to_json())
    except BadRequest as exc:
        decision = Decision.deny(403, Reason.BAD_REQUEST, str(exc))
        return render(decision, decision.to_json())
    decision = state.engine.decide(check)
    return render(decision, decision.to_json())
