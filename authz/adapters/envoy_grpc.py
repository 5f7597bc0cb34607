"""Envoy ``ext_authz`` over gRPC: ``envoy.service.auth.v3.Authorization/Check``.

Runs in its own process (``authz grpc --bind HOST:PORT``: ``GrpcServer`` below), never
inside a gunicorn WSGI worker, with the same policy and store as the HTTP side. The request is read
from ``CheckRequest.attributes`` (``request.http``: method, path with query, host,
scheme, lower-case headers; ``source.address``; ``source.certificate`` as URL-encoded
PEM). The answer: ``status.code`` 0 with identity headers (overwriting anything the
client sent, and removing identity headers this decision does not set) in
``ok_response``, and a DPoP server nonce in its ``response_headers_to_add`` (for the
client); 16 UNAUTHENTICATED (401), 7 PERMISSION_DENIED (403) or 13 INTERNAL
(500) with the HTTP status, ``x-auth-reason``, ``www-authenticate`` (and ``dpop-nonce``,
``accept-signature``) and the JSON body in ``denied_response``.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent import futures

import grpc
from envoy.config.core.v3.base_pb2 import HeaderValue, HeaderValueOption
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.type.v3.http_status_pb2 import HttpStatus
from google.rpc import status_pb2

from authz.adapters import client_certs
from authz.adapters.common import MALFORMED, malformed, observe, render, unset_identity_headers
from authz.adapters.trust import refusal
from authz.config import Settings
from authz.credentials.x509 import from_pem
from authz.decision import Decision, Reason
from authz.request import CheckRequest, Headers, parse_ip
from authz.service import AuthzState, build_state

log = logging.getLogger("authz.grpc")
OK, PERMISSION_DENIED, UNAUTHENTICATED, INTERNAL = 0, 7, 16, 13
_OVERWRITE = HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def grpc_peer(peer: str) -> str | None:
    """'ipv4:127.0.0.1:5000' / 'ipv6:[::1]:5000' → the address."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0]
    if kind == "ipv6":
        return rest.rsplit(":", 1)[0].strip("[]")
    return None


def describe(request: external_auth_pb2.CheckRequest, allow: frozenset[str] = frozenset()) -> CheckRequest:
    attributes = request.attributes
    http = attributes.request.http
    headers = Headers([(k, v) for k, v in http.headers.items() if not k.startswith(":")])
    certs = client_certs.from_headers(headers)
    if attributes.source.certificate:
        certs = (from_pem("envoy_grpc", attributes.source.certificate), *certs)
    client_ip = parse_ip(attributes.source.address.socket_address.address)
    host = http.host or headers.get("host", "")
    return CheckRequest.build(http.method or "GET", http.path or "/", host, http.scheme or "http", headers,
                              client_ip, certs, allow)


def respond(decision: Decision) -> external_auth_pb2.CheckResponse:
    status, headers, body = render(decision)
    if decision.allowed:
        remove = [h.lower() for h in unset_identity_headers(decision)] + decision.strip_headers
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=OK),
            ok_response=external_auth_pb2.OkHttpResponse(
                headers=[HeaderValueOption(header=HeaderValue(key=k.lower(), value=v), append_action=_OVERWRITE)
                         for k, v in headers if k.lower().startswith("x-auth-")],
                headers_to_remove=remove,
                # To the client's response, not the upstream's request (RFC 9449 §9).
                response_headers_to_add=[HeaderValueOption(header=HeaderValue(key=k.lower(), value=v),
                                                           append_action=_OVERWRITE)
                                         for k, v in headers if k.lower() == "dpop-nonce"]))
    code = {401: UNAUTHENTICATED, 403: PERMISSION_DENIED}.get(status, INTERNAL)
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code, message=str(decision.reason)),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=HttpStatus(code=status),
            headers=[HeaderValueOption(header=HeaderValue(key=k.lower(), value=v)) for k, v in headers],
            body=body.decode()))


class AuthorizationService(external_auth_pb2_grpc.AuthorizationServicer):
    def __init__(self, state) -> None:
        self.state = state

    def Check(self, request, context):
        started = time.perf_counter()
        self.state.reloader.ensure_running()
        try:
            decision, check = self._decide(request, context)
        except Exception:
            log.exception("internal error in Check")
            decision, check = Decision.deny(500, Reason.INTERNAL_ERROR, "internal error"), None
        headers = request.attributes.request.http.headers
        observe(self.state, decision, check, headers.get("x-request-id"), started)
        return respond(decision)

    def _decide(self, request, context) -> tuple[Decision, CheckRequest | None]:
        settings = self.state.settings
        peer = parse_ip(grpc_peer(context.peer()))
        secret = dict(context.invocation_metadata()).get("x-authz-proxy-secret", "")
        denied = refusal(settings, peer, secret, "x-authz-proxy-secret")
        if denied is not None:
            return denied, None
        try:
            check = describe(request, settings.target_allow)
        except MALFORMED as exc:
            return malformed(exc), None
        return self.state.engine.decide(check), check


def make_server(state, bind: str, workers: int = 8) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="authz-grpc"),
                         options=[("grpc.max_receive_message_length", 1 << 20)])
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(AuthorizationService(state), server)
    try:
        port = server.add_insecure_port(bind)
    except RuntimeError:  # grpcio ≥ 1.60 raises where older versions returned 0
        port = 0
    if port == 0:
        raise OSError(f"cannot listen on {bind}")
    return server, port


class GrpcServer:
    """``authz grpc``'s lifecycle: build the service and bind (raising ``AuthzError`` or
    ``OSError`` before anything is served), then ``run`` until SIGTERM/SIGINT, finishing
    the calls in flight. SIGHUP reloads the policy at once; a broken policy is refused
    and the running revision kept. ``say`` reports to the operator (stderr)."""

    def __init__(self, settings: Settings, bind: str, workers: int = 8) -> None:
        self.state: AuthzState = build_state(settings)
        self.server, self.port = make_server(self.state, bind, workers)
        self.host = bind.rsplit(":", 1)[0]

    def run(self, say: Callable[[str], None]) -> None:
        """Serve until stopped; must be called from the main thread (signal handlers)."""
        state = self.state
        stopping = threading.Event()

        def stop(signum, frame) -> None:
            stopping.set()

        def reload(signum, frame) -> None:
            threading.Thread(target=forced_check, daemon=True).start()

        def forced_check() -> None:
            state.reloader.check(force=True)
            if state.reloader.error is not None:
                say(f"authz grpc: reload refused, keeping revision {state.engine.policy.revision}:\n"
                    f"{state.reloader.error}")
            else:
                say(f"authz grpc: policy revision {state.engine.policy.revision}")

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, reload)
        self.server.start()
        state.reloader.ensure_running()
        state.start_background()
        say(f"authz grpc: listening on {self.host}:{self.port}, policy revision {state.engine.policy.revision}")
        while not stopping.wait(1.0):
            pass
        say("authz grpc: shutting down (finishing calls in flight)")
        self.server.stop(grace=5).wait()
