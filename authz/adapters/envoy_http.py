"""Envoy ``ext_authz`` HTTP service: ``/ext-authz/<original path>``.

Envoy sends **the client's method**, ``path_prefix`` + the original ``:path`` (query
included, not decoded) and the original ``Host``; only ``authorization`` and the
headers in ``allowed_headers`` arrive. Only 200 allows, so every method — OPTIONS
too — is decided by the policy here, never answered by the framework. On allow,
``x-envoy-auth-headers-to-remove`` names the consumed credential headers when the
route says ``strip_credentials``.
"""

from __future__ import annotations

from urllib.parse import quote

from authz.adapters import client_certs
from authz.adapters.common import Answer, request_headers, serve, unset_identity_headers, wsgi_text
from authz.decision import Decision
from authz.request import BadRequest, CheckRequest, split_absolute

PREFIX = "/ext-authz"


def original_target(environ: dict) -> str:
    """The undecoded target after the prefix (gunicorn's RAW_URI when there is one).

    An absolute-form target keeps its scheme and host (``http://h/x``) so that
    ``CheckRequest.build`` can hold the host to the Host header.
    """
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw is None:
        # A server that gives no raw target (granian) decoded PATH_INFO once: encoding it
        # again, '%' included, gives back what the firewall must judge (a decoded "%2F"
        # cannot be told from "/": Envoy's path_with_escaped_slashes_action refuses it).
        path = quote(environ.get("PATH_INFO", "").encode("latin-1"), safe="/;:@&=+$,!~*'()")
        raw = environ.get("SCRIPT_NAME", "") + path + (f"?{environ['QUERY_STRING']}"
                                                         if environ.get("QUERY_STRING") else "")
    raw = wsgi_text(raw)
    origin = ""
    if not raw.startswith("/"):  # absolute-form request target
        scheme, host, raw = split_absolute(raw)
        origin = f"{scheme}://{host}"
    if not raw.startswith(PREFIX) or raw[len(PREFIX):][:1] not in ("", "/", "?"):
        raise BadRequest("request target does not start with the ext_authz path_prefix")
    target = raw[len(PREFIX):]
    return origin + (target if target.startswith("/") else "/" + target)


def describe(environ: dict, settings, peer) -> CheckRequest:
    headers = request_headers(environ)
    client_ip = settings.trusted.client_ip(peer, headers.get("x-forwarded-for"), None)
    return CheckRequest.build(environ.get("REQUEST_METHOD", "GET"), original_target(environ),
                              wsgi_text(headers.get("host", "")), headers.get("x-forwarded-proto", "http"), headers,
                              client_ip, client_certs.from_headers(headers), settings.target_allow)


def strip(decision: Decision) -> list[tuple[str, str]]:
    """Remove identity headers this decision does not set (a client may have sent
    them) and, with ``strip_credentials``, the consumed credential headers."""
    remove = [h.lower() for h in unset_identity_headers(decision)] + decision.strip_headers
    return [("x-envoy-auth-headers-to-remove", ", ".join(remove))]


def handle(state, environ: dict) -> Answer:
    return serve(state, environ, describe, strip)
