"""The Flask app factory.

>>> from authz.app import create_app
>>> app = create_app()            # reads AUTHZ_DB, AUTHZ_POLICY_DIR, …  # doctest: +SKIP

The app refuses to start on a missing or outdated store and on an invalid policy:
``create_app`` raises ``StoreError`` / ``PolicyError`` with every problem listed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from authz.adapters import api, nginx
from authz.adapters.common import render
from authz.authenticators import Context
from authz.config import Settings
from authz.decision import Decision, Reason
from authz.engine import DecisionEngine
from authz.policy import load_policy
from authz.store import Store

log = logging.getLogger("authz")


@dataclass
class AuthzState:
    settings: Settings
    store: Store
    engine: DecisionEngine


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    store = Store(settings.db_path, last_used_interval=settings.last_used_interval)
    store.check_ready()
    context = Context(store=store)
    engine = DecisionEngine(load_policy(settings.policy_dir, context))

    app = Flask("authz")
    app.extensions["authz"] = AuthzState(settings, store, engine)
    app.register_blueprint(nginx.blueprint)
    app.register_blueprint(api.blueprint)

    @app.get("/healthz", provide_automatic_options=False)
    def healthz():
        return jsonify(status="ok")

    @app.get("/readyz", provide_automatic_options=False)
    def readyz():
        policy = engine.policy
        return jsonify(status="ready", revision=policy.revision, files=policy.files)

    @app.errorhandler(Exception)
    def internal_error(exc: Exception):
        # Any failure outside the engine (adapter bug, broken store) is a deny.
        if isinstance(exc, HTTPException):
            return exc
        log.exception("internal error")
        return render(Decision.deny(500, Reason.INTERNAL_ERROR, "internal error"))

    return app
