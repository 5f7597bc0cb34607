"""``POST /v1/decisions``: the JSON decision API for scripts, tests and explain.

Body: ``{"method", "url" | "host" + "path", "headers": {}, "client_ip", "client_cert"}``.
The answer has the status of the decision (200/401/403) and the whole decision as
JSON. A body that does not describe a request, like a described request with an
ambiguous target, is a logged 403 ``bad_request`` — a deny like any other.
"""

from __future__ import annotations

import json
import time

from authz.adapters import client_certs
from authz.adapters.common import MALFORMED, Answer, malformed, observe, render
from authz.adapters.trust import check_peer
from authz.credentials.x509 import from_pem
from authz.engine.explain import explain
from authz.request import BadRequest, CheckRequest, Headers, parse_ip, split_absolute

PATH = "/v1/decisions"
MAX_BODY = 256 * 1024


class InvalidBody(BadRequest):
    """The JSON body does not describe a request."""


def read_json(environ: dict) -> object:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise InvalidBody("bad Content-Length") from None
    if length > MAX_BODY:
        raise InvalidBody(f"body larger than {MAX_BODY} bytes")
    raw = environ["wsgi.input"].read(length) if length > 0 else b""
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidBody("body is not JSON (or nested too deeply)") from None


def describe(body: object, allow: frozenset[str] = frozenset()) -> CheckRequest:
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
        try:
            scheme, host, target = split_absolute(body["url"])
        except BadRequest as exc:
            raise InvalidBody(f"'url': {exc}") from None
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
    certs = client_certs.from_headers(headers)
    if body.get("client_cert") is not None:
        if not isinstance(body["client_cert"], str):
            raise InvalidBody("'client_cert' must be a PEM string (leaf first, chain after)")
        certs = (from_pem("api", body["client_cert"]), *certs)
    return CheckRequest.build(method, target, host, scheme, headers, client_ip, certs, allow)


def handle(state, environ: dict) -> Answer:
    if environ.get("REQUEST_METHOD") != "POST":
        return Answer(405, [("Allow", "POST"), ("Content-Length", "0")], b"")
    started = time.perf_counter()
    request_id = environ.get("HTTP_X_REQUEST_ID")
    _, denied = check_peer(state.settings, environ)
    body: object = None
    if denied is None:
        try:
            body = read_json(environ)
            check = describe(body, state.settings.target_allow)
        except MALFORMED as exc:  # InvalidBody is a BadRequest
            denied = malformed(exc)
    if denied is not None:  # logged like every other decision, whatever went wrong
        observe(state, denied, None, request_id, started)
        return render(denied, denied.to_json())
    if body.get("explain") is True:  # type: ignore[union-attr]  (describe() accepted only an object)
        decision, explanation = explain(state.engine, check)
        observe(state, decision, check, request_id, started)
        return render(decision, {**decision.to_json(), "explain": explanation})
    decision = state.engine.decide(check)
    observe(state, decision, check, request_id, started)
    return render(decision, decision.to_json())
