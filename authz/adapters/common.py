"""What every HTTP front door shares: the routine (trusted peer, describe, decide) and the response.

Front doors are plain WSGI handlers, ``handle(state, environ) -> Answer``: the
decision endpoints are the hot path and skip Flask's request and response objects
(``adapters.frontdoors.FrontDoors`` routes to them). The response contract (docs/contract.md,
"Answers"): allow is
exactly 200 with ``X-Auth-*`` identity headers; deny is 401/403 (500 on internal
error) with ``X-Auth-Reason``, one ``WWW-Authenticate`` per acceptable scheme on
401 (and ``Accept-Signature`` when a signed request was refused), and a small JSON body. Nothing secret is ever echoed.
"""

from __future__ import annotations

import json
import time
from typing import NamedTuple

from authz.adapters.trust import SECRET_HEADER, check_peer
from authz.decision import Decision, IdentityKind, Reason
from authz.observability import metrics
from authz.request import BadRequest, CheckRequest, Headers

# Every identity header an allow may carry: a front door that can remove request
# headers removes those a decision does not set, so a client cannot forge them.
IDENTITY_HEADERS = ("X-Auth-Principal", "X-Auth-User", "X-Auth-Client", "X-Auth-Service", "X-Auth-Scopes",
                    "X-Auth-Token", "X-Auth-Jkt")
_LAYER_HEADERS = ((IdentityKind.USER, "X-Auth-User"), (IdentityKind.CLIENT, "X-Auth-Client"),
                  (IdentityKind.SERVICE, "X-Auth-Service"))
_SKIP = frozenset({SECRET_HEADER})


class Answer(NamedTuple):
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def header_safe(value: str) -> str:
    """Percent-escape anything that is not printable ASCII (no header injection)."""
    if value.isascii() and value.isprintable():
        return value
    return "".join(c if " " <= c <= "~" and c != "%" else "".join(
        f"%{b:02X}" for b in c.encode("utf-8", "surrogateescape")) for c in value)


# What describing a request may raise for input that cannot be described safely: a
# logged 403 bad_request at every door, never a 500 or a traceback.
MALFORMED = (BadRequest, UnicodeError, RecursionError)


def malformed(exc: Exception) -> Decision:
    """The deny for malformed input (the detail bounded: it may quote the input)."""
    return Decision.deny(403, Reason.BAD_REQUEST, str(exc)[:200])


def wsgi_text(value: str) -> str:
    """A WSGI string (PEP 3333: the header's bytes read as latin-1) as the UTF-8 text
    the client sent; ``BadRequest`` when the bytes are not UTF-8. nginx and Caddy pass
    a request target's raw UTF-8 bytes on in X-Original-URI / X-Forwarded-Uri."""
    if value.isascii():
        return value
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        raise BadRequest("request target is not valid UTF-8") from None


def request_headers(environ: dict) -> Headers:
    """The forwarded request headers, without the proxy secret."""
    return Headers.from_environ(environ, _SKIP)


def identity_headers(decision: Decision) -> list[tuple[str, str]]:
    headers = [("X-Auth-Route", decision.route or ""), ("X-Auth-Methods", ",".join(decision.methods))]
    principal = decision.principal
    if principal is None:
        return headers
    headers.append(("X-Auth-Principal", header_safe(principal.id)))
    for kind, name in _LAYER_HEADERS:
        identity = decision.layer(kind)
        if identity is not None:
            headers.append((name, header_safe(identity.id)))
    headers.append(("X-Auth-Scopes", " ".join(decision.scopes)))
    jkt = proof_key(decision)
    if jkt is not None:
        headers.append(("X-Auth-Jkt", jkt))
    return headers


def proof_key(decision: Decision) -> str | None:
    """The RFC 7638 thumbprint of the key a DPoP proof proved for this decision, if any."""
    return next((i.jkt for i in decision.identities if i.jkt is not None), None)


def unset_identity_headers(decision: Decision) -> list[str]:
    """The identity headers an allow does not set (``IDENTITY_HEADERS`` spelling): a
    client may have sent them, so each door has the proxy remove or blank them."""
    present = set()
    if decision.principal is not None:
        present = {"X-Auth-Principal", "X-Auth-Scopes"}
        present.update(name for kind, name in _LAYER_HEADERS if decision.layer(kind) is not None)
    if decision.identity_token:
        present.add("X-Auth-Token")
    if decision.principal is not None and proof_key(decision) is not None:
        present.add("X-Auth-Jkt")
    return [h for h in IDENTITY_HEADERS if h not in present]


def observe(state, decision: Decision, check: CheckRequest | None, request_id: str | None, started: float) -> None:
    """Every decision is counted and logged, whichever door it came through; one that
    identified an API key counts in that key's usage (unless ``AUTHZ_KEY_USAGE=off``)."""
    metrics.decision(decision.route, decision.allowed, str(decision.reason) if decision.reason else None,
                     time.perf_counter() - started)
    state.decision_log.record(decision, check, request_id, started)
    key = decision.api_key
    if key is not None and state.settings.key_usage:
        state.store.last_used.count(key.id, decision.allowed, check.client_ip if check is not None else None,
                                    decision.route, key.status == "deprecated")


def serve(state, environ: dict, describe, extra=None, with_body: bool = True) -> Answer:
    """The front-door routine: trusted peer, describe the request, decide, render.

    ``describe(environ, settings, peer) -> CheckRequest`` is the adapter's parser;
    ``extra(decision) -> headers`` adds proxy-specific response headers on allow;
    ``with_body=False`` answers with headers only (see ``render``).
    """
    started = time.perf_counter()
    check = None
    peer, decision = check_peer(state.settings, environ)
    if decision is None:
        try:
            check = describe(environ, state.settings, peer)
        except MALFORMED as exc:
            decision = malformed(exc)
        else:
            decision = state.engine.decide(check)
    observe(state, decision, check, environ.get("HTTP_X_REQUEST_ID"), started)
    answer = render(decision, empty=not with_body)
    if extra is not None and decision.allowed:
        answer.headers.extend(extra(decision))
    return answer


def render(decision: Decision, body: dict | None = None, empty: bool = False) -> Answer:
    """The HTTP answer for a decision; ``body`` replaces the default JSON body.

    ``empty``: no body at all, the route in ``X-Auth-Route`` on deny too. nginx reads
    only the headers of an auth subrequest and can keep its connection to authz only
    when the answer has no body (``Content-Length: 0``); it never shows the body."""
    if decision.allowed:
        headers = identity_headers(decision)
        if decision.identity_token:
            headers.append(("X-Auth-Token", decision.identity_token))
        payload = body if body is not None else {"decision": "allow", "route": decision.route}
    else:
        headers = [("X-Auth-Reason", str(decision.reason))]
        headers.extend(("WWW-Authenticate", c) for c in decision.challenges)
        if decision.accept_signature is not None:  # RFC 9421 §5.1: the signature wanted
            headers.append(("Accept-Signature", decision.accept_signature))
        payload = body if body is not None else {
            "decision": "deny", "reason": str(decision.reason), "route": decision.route,
        }
    if decision.dpop_nonce is not None:  # RFC 9449 §9, on allow and deny alike
        headers.append(("DPoP-Nonce", decision.dpop_nonce))
    if empty:
        if not decision.allowed:
            headers.append(("X-Auth-Route", decision.route or ""))
        headers.append(("Content-Length", "0"))
        headers.append(("Cache-Control", "no-store"))
        return Answer(decision.status, headers, b"")
    data = json.dumps(payload).encode()
    headers.append(("Content-Type", "application/json"))
    headers.append(("Content-Length", str(len(data))))
    headers.append(("Cache-Control", "no-store"))
    return Answer(decision.status, headers, data)
