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
from authz.engine.explain import explain
from authz.request import CheckRequest, InvalidBody

PATH = "/v1/decisions"
MAX_BODY = 256 * 1024


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
            check = CheckRequest.from_json(body, state.settings.target_allow, client_certs.from_headers)
        except MALFORMED as exc:  # InvalidBody is a BadRequest
            denied = malformed(exc)
    if denied is not None:  # logged like every other decision, whatever went wrong
        observe(state, denied, None, request_id, started)
        return render(denied, denied.to_json())
    if body.get("explain") is True:  # type: ignore[union-attr]  (from_json() accepted only an object)
        decision, explanation = explain(state.engine, check)
        observe(state, decision, check, request_id, started)
        return render(decision, {**decision.to_json(), "explain": explanation})
    decision = state.engine.decide(check)
    observe(state, decision, check, request_id, started)
    return render(decision, decision.to_json())
