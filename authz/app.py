"""The Flask app factory.

>>> from authz.app import create_app
>>> app = create_app()            # reads AUTHZ_DB, AUTHZ_POLICY_DIR, …  # doctest: +SKIP

``authz.service.build_state`` builds the service; the decision endpoints are plain WSGI
handlers that ``adapters.frontdoors.FrontDoors`` dispatches ahead of Flask. Flask
serves everything else: health, readiness, metrics and the identity tokens' JWKS.

The app refuses to start on a missing or outdated store and on an invalid policy:
``create_app`` raises ``StoreError`` / ``PolicyError`` with every problem listed.
"""

from __future__ import annotations

from flask import Flask, Response, jsonify, request

from authz.adapters.frontdoors import FrontDoors
from authz.adapters.trust import check_peer
from authz.config import Settings
from authz.decision import Reason
from authz.observability import metrics
from authz.observability.store_metrics import StoreMetrics
from authz.service import build_state


def create_app(settings: Settings | None = None) -> Flask:
    """The WSGI app: the front doors ahead of Flask's operational endpoints."""
    state = build_state(settings)

    app = Flask("authz")
    app.extensions["authz"] = state
    app.wsgi_app = FrontDoors(app.wsgi_app, state)  # type: ignore[method-assign]
    store_metrics = StoreMetrics(state.store, state.shared or state.store)  # type: ignore[arg-type]
    state.start_background()

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
        body, content_type = metrics.exposition(store_metrics)
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
