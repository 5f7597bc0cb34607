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

from flask import Flask, Response, jsonify, request

from authz.adapters import api, envoy_http, forward_auth, nginx
from authz.adapters.common import Answer, check_peer, render
from authz.authenticators import Context
from authz.authenticators.password_guard import PasswordGuard
from authz.config import Settings
from authz.decision import Decision, Reason
from authz.engine import DecisionEngine
from authz.engine.identity_token import IdentitySigner
from authz.observability import metrics
from authz.observability.decision_log import DecisionLog
from authz.policy import PolicyError
from authz.policy.reloader import PolicyReloader
from authz.store import ServingStore, StoreError, open_store

log = logging.getLogger("authz")

Handler = Callable[["AuthzState", dict], Answer]


@dataclass
class AuthzState:
    settings: Settings
    store: ServingStore
    engine: DecisionEngine
    reloader: PolicyReloader
    decision_log: DecisionLog


class FrontDoors:
    """WSGI middleware: exact decision paths to their adapter, the rest to Flask.

    Any exception in an adapter is answered with a 500 deny, never an allow.
    """

    def __init__(self, fallback, state: AuthzState, handlers: dict[str, Handler],
                 prefixes: dict[str, Handler]) -> None:
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


def build_engine(settings: Settings, store: ServingStore, context: Context | None = None
                 ) -> tuple[DecisionEngine, PolicyError | None]:
    """The policy (the files, else the last good snapshot, else refuse) and the signer."""
    context = context or Context(store=store)
    policy, error = PolicyReloader.initial_policy(settings.policy_dir, context, store.policy_snapshots)
    signer = IdentitySigner(store, settings.issuer, settings.identity_token_ttl, settings.identity_token_audience)
    wants_token = settings.identity_token_everywhere or any(
        r.options.get("identity_token") for r in policy.routes.routes)
    if wants_token and store.signing_keys.active() is None:
        raise StoreError("X-Auth-Token is configured but the store has no signing key: "
                         "run `authz signing-keys rotate`")
    return DecisionEngine(policy, signer, settings.identity_token_everywhere), error


def build_state(settings: Settings | None = None) -> AuthzState:
    """Store and engine for a front door (the WSGI app or the gRPC server)."""
    settings = settings or Settings.from_env()
    store = open_store(settings.db_path, last_used_interval=settings.last_used_interval, serving=True)
    store.check_ready()
    context = Context(store=store, max_chain_length=settings.max_chain_length, password_guard=PasswordGuard(
        settings.password_user_failures, settings.password_address_failures, settings.kdf_concurrency))
    stamp = PolicyReloader.policy_files_stamp(settings.policy_dir)
    engine, error = build_engine(settings, store, context)
    reloader = PolicyReloader(engine, settings.policy_dir, context, stamp_before_load=stamp,
                              on_result=metrics.reload_result)
    reloader.error = error
    metrics.policy_revision(engine.policy.revision)
    return AuthzState(settings, store, engine, reloader,
                      DecisionLog(settings.decision_log, settings.decision_log_allow_sample))


def create_app(settings: Settings | None = None) -> Flask:
    state = build_state(settings)

    app = Flask("authz")
    app.extensions["authz"] = state
    app.wsgi_app = FrontDoors(app.wsgi_app, state, {  # type: ignore[method-assign]
        nginx.PATH: nginx.handle,
        forward_auth.PATH: forward_auth.handle,
        api.PATH: api.handle,
    }, {envoy_http.PREFIX: envoy_http.handle})

    @app.get("/healthz", provide_automatic_options=False)
    def healthz():
        return jsonify(status="ok")

    @app.get("/.well-known/jwks.json", provide_automatic_options=False)
    def jwks():
        response = jsonify(state.engine.signer.jwks() if state.engine.signer else {"keys": []})
        response.headers["Cache-Control"] = "public, max-age=60"
        return response

    def trusted_peer() -> bool:
        """Operational detail (policy files, errors, revisions, traffic) is for the
        trusted network only; ``/healthz`` stays open to all."""
        return check_peer(state.settings, request.environ, secret=False)[1] is None

    @app.get("/metrics", provide_automatic_options=False)
    def metrics_endpoint():
        if not trusted_peer():
            return jsonify(decision="deny", reason=str(Reason.UNTRUSTED_PROXY)), 403
        body, content_type = metrics.exposition()
        return Response(body, content_type=content_type)

    @app.get("/readyz", provide_automatic_options=False)
    def readyz():
        body = state.reloader.status()
        problem = state.store.problem()
        if problem is not None:
            # Store-backed credentials are denied (500) until a valid store is back.
            body.update(status="not_ready", store=problem)
        code = 200 if body.get("status") in ("ready", "degraded") else 503
        if not trusted_peer():
            return jsonify(status=body.get("status")), code
        return jsonify(body), code

    return app
