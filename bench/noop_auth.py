"""No-op auth endpoints for the serving baselines: 200 with an ``X-Auth-User`` header, no body.

``app``: a bare WSGI callable (the baseline for ``authz serve`` under the same granian
settings). ``flask_app``: a hand-written Flask auth endpoint (under gunicorn sync, the
baseline for nginx ``auth_request``; under granian, context for the direct rows).
"""

from flask import Flask

HEADERS = [("X-Auth-User", "noop"), ("Content-Length", "0")]


def app(environ, start_response):
    start_response("200 OK", list(HEADERS))
    return [b""]


flask_app = Flask("noop-auth")


@flask_app.route("/auth-request", methods=["GET"])
def auth_request():
    return "", 200, {"X-Auth-User": "noop"}
