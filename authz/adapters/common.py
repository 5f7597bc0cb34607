"""What every HTTP front door shares: the trusted-peer gate and the response.

The response contract (DESIGN.md): allow is exactly 200 with ``X-Auth-*`` identity
headers; deny is 401/403 (500 on internal error) with ``X-Auth-Reason``, one
``WWW-Authenticate`` per acceptable scheme on 401, and a small JSON body. Nothing
secret is ever echoed: the body carries the reason code and route only.
"""

from __future__ import annotations

import hmac
import json

from flask import Response

from authz.config import Settings
from authz.decision import Decision, IdentityKind, Reason
from authz.request import Headers, IPAddress, parse_ip


def header_safe(value: str) -> str:
    """Percent-escape anything that is not printable ASCII (no header injection)."""
    if value.isascii() and value.isprintable():
        return value
    return "".join(c if " " <= c <= "~" and c != "%" else "".join(
        f"%{b:02X}" for b in c.encode("utf-8", "surrogateescape")) for c in value)


def headers_from_environ(environ: dict) -> Headers:
    """The forwarded request headers (``HTTP_*`` in WSGI), without the proxy secret."""
    items = [
        (key[5:].replace("_", "-"), value)
        for key, value in environ.items()
        if key.startswith("HTTP_") and key != "HTTP_X_AUTHZ_PROXY_SECRET"
    ]
    return Headers(items)


def check_peer(settings: Settings, environ: dict) -> tuple[IPAddress | None, Decision | None]:
    """Return (peer address, None) for a trusted caller, else (peer, deny decision)."""
    peer = parse_ip(environ.get("REMOTE_ADDR"))
    if peer not in settings.trusted:
        return peer, Decision.deny(403, Reason.UNTRUSTED_PROXY, f"peer {peer} is not a trusted proxy")
    if settings.proxy_secret is not None:
        given = environ.get("HTTP_X_AUTHZ_PROXY_SECRET", "")
        if not hmac.compare_digest(given.encode(), settings.proxy_secret.encode()):
            return peer, Decision.deny(403, Reason.UNTRUSTED_PROXY, "missing or wrong X-Authz-Proxy-Secret")
    return peer, None


def identity_headers(decision: Decision) -> list[tuple[str, str]]:
    headers = [("X-Auth-Route", decision.route or "")]
    headers.append(("X-Auth-Methods", ",".join(decision.methods)))
    principal = decision.principal
    if principal is None:
        return headers
    headers.append(("X-Auth-Principal", header_safe(principal.id)))
    for kind, name in ((IdentityKind.USER, "X-Auth-User"), (IdentityKind.CLIENT, "X-Auth-Client"),
                       (IdentityKind.SERVICE, "X-Auth-Service")):
        identity = decision.layer(kind)
        if identity is not None:
            headers.append((name, header_safe(identity.id)))
    headers.append(("X-Auth-Scopes", " ".join(decision.scopes)))
    return headers


def render(decision: Decision, body: dict | None = None) -> Response:
    """The HTTP answer for a decision; ``body`` replaces the default JSON body."""
    if decision.allowed:
        headers = identity_headers(decision)
        payload = body if body is not None else {"decision": "allow", "route": decision.route}
    else:
        headers = [("X-Auth-Reason", str(decision.reason))]
        headers.extend(("WWW-Authenticate", c) for c in decision.challenges)
        payload = body if body is not None else {
            "decision": "deny", "reason": str(decision.reason), "route": decision.route,
        }
    headers.append(("Cache-Control", "no-store"))
    return Response(json.dumps(payload), status=decision.status, headers=headers,
                    mimetype="application/json")
