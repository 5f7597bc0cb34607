"""The Flask app factory.

>>> from authz.app import create_app
>>> app = create_app()            # reads AUTHZ_DB, AUTHZ_POLICY_DIR, …  # doctest: +SKIP

The decision endpoints (one per front door in ``adapters/``) are plain WSGI handlers
dispatched by ``FrontDoors`` ahead of Flask: they run on every proxied request, and
Flask's request/response objects cost more than the decision itself. Flask serves
everything else (health, readiness, and later metrics and JWKS).

The app refuses to start on a missing or outdated store and on an invalid policy:
``create_app`` raises ``StoreError`` / ``PolicyError`` with every problem listed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus

from flask import Flask, jsonify

from authz.adapters import api, nginx
from authz.adapters.common import Answer, render
from authz.authenticators import Context
from authz.config import Settings
from authz.decision import Decision, Reason
from authz.engine import DecisionEngine
from authz.policy import load_policy
from authz.store import Store

log = logging.getLogger("authz")

Handler = Callable[["AuthzState", dict], Answer]


@dataclass
class AuthzState:
    settings: Settings
    store: Store
    engine: DecisionEngine


class FrontDoors:
    """WSGI middleware: exact decision paths to their adapter, the rest to Flask.

    Any exception in an adapter is answered with a 500 deny, never an allow.
    """

    def __init__(self, fallback, state: AuthzState, handlers: dict[str, Handler]) -> None:
        self.fallback = fallback
        self.state = state
        self.handlers = handlers

    def __call__(self, environ: dict, start_response) -> Iterable[bytes]:
        handler = self.handlers.get(environ.get("PATH_INFO", ""))
        if handler is None:
            return self.fallback(environ, start_response)
        try:
            status, headers, body = handler(self.state, environ)
        except Exception:
            log.exception("internal error in %s", environ.get("PATH_INFO"))
            status, headers, body = render(Decision.deny(500, Reason.INTERNAL_ERROR, "internal error"))
        start_response(f"{status} {HTTPStatus(status).phrase}", headers)
        return [body]


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    store = Store(settings.db_path, last_used_interval=settings.last_used_interval)
    store.check_ready()
    context = Context(store=store)
    engine = DecisionEngine(load_policy(settings.policy_dir, context))
    state = AuthzState(settings, store, engine)

    app = Flask("authz")
    app.extensions["authz"] = state
    app.wsgi_app = FrontDoors(app.wsgi_app, state, {  # type: ignore[method-assign]
        nginx.PATH: nginx.handle,
        api.PATH: api.handle,
    })

    @app.get("/healthz", provide_automatic_options=False)
    def healthz():
        return jsonify(status="ok")

    @app.get("/readyz", provide_automatic_options=False)
    def readyz():
        policy = state.engine.policy
        return jsonify(status="ready", revision=policy.revision, files=policy.files)

    return app
