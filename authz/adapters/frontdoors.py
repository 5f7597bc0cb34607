"""The WSGI dispatcher: each decision path to its front door, the rest to Flask.

The decision endpoints (one module per door in ``adapters/``) are plain WSGI handlers,
``handle(state, environ) -> Answer``, dispatched here ahead of Flask: they run on every
proxied request, and Flask's request/response objects cost more than the decision
itself. A new door adds its path to ``DOORS`` (exact) or ``PREFIXED_DOORS``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from http import HTTPStatus

from authz.adapters import api, envoy_http, forward_auth, nginx
from authz.adapters.common import Answer, render
from authz.decision import Decision, Reason
from authz.service import AuthzState

log = logging.getLogger("authz")

Handler = Callable[[AuthzState, dict], Answer]
DOORS: dict[str, Handler] = {nginx.PATH: nginx.handle, forward_auth.PATH: forward_auth.handle, api.PATH: api.handle}
PREFIXED_DOORS: dict[str, Handler] = {envoy_http.PREFIX: envoy_http.handle}


class FrontDoors:
    """WSGI middleware: exact decision paths to their adapter, the rest to ``fallback``.

    Any exception in an adapter is answered with a 500 deny, never an allow.
    """

    def __init__(self, fallback, state: AuthzState, handlers: dict[str, Handler] = DOORS,
                 prefixes: dict[str, Handler] = PREFIXED_DOORS) -> None:
        self.fallback = fallback
        self.state = state
        self.handlers = handlers
        self.prefixes = prefixes

    def _handler(self, path: str) -> Handler | None:
        handler = self.handlers.get(path)
        if handler is None:
            for prefix, candidate in self.prefixes.items():
                if path == prefix or path.startswith(prefix + "/"):
                    return candidate
        return handler

    def __call__(self, environ: dict, start_response) -> Iterable[bytes]:
        self.state.reloader.ensure_running()
        handler = self._handler(environ.get("PATH_INFO", ""))
        if handler is None:
            return self.fallback(environ, start_response)
        try:
            status, headers, body = handler(self.state, environ)
        except Exception:
            log.exception("internal error in %s", environ.get("PATH_INFO"))
            status, headers, body = render(Decision.deny(500, Reason.INTERNAL_ERROR, "internal error"))
        start_response(f"{status} {HTTPStatus(status).phrase}", headers)
        return [body]
