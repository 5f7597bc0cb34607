"""Real front doors around one authz, for end-to-end tests of a policy of their own.

The shipped nginx (``deploy/nginx/authz.conf``) and Caddy (``deploy/caddy/Caddyfile``)
files run for real in front of authz under gunicorn, each with an upstream that echoes
the identity headers it received; Envoy's HTTP check is asked as Envoy asks it (only
the headers ``deploy/envoy/envoy-http.yaml`` allows); Envoy's gRPC check through a
real channel to ``authz grpc``. Every ``via_*`` returns (status, principal, methods):
what the upstream saw on an allow, (status, None, None) on a deny.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import requests
from envoy.service.auth.v3 import external_auth_pb2_grpc

from authz.store import Store
from tests.conftest import BIN, ROOT, Server, free_port, gunicorn_env, loopback_listens, nginx_binary, start_caddy
from tests.test_front_doors import ENVOY_PASSES, envoy_check_request

ECHO_NGINX = ('add_header X-Seen-Principal "$http_x_auth_principal" always; '
              'add_header X-Seen-Methods "$http_x_auth_methods" always; return 200 "ok";')
HOST = "api.example.com"


@contextlib.contextmanager
def doors(tmp: Path, store: Store, policy_dir: Path) -> Iterator[dict]:
    """authz (gunicorn, 2 workers, and ``authz grpc``), nginx and Caddy, stopped after."""
    started: list[Server] = []
    channel = None
    try:
        port = free_port()
        authz = Server([str(BIN / "gunicorn"), "--workers", "2", "--bind", f"127.0.0.1:{port}", "wsgi:app"],
                       port, env=gunicorn_env(store, policy_dir), log=tmp / "gunicorn.log")
        started.append(authz.wait())
        grpc_port = free_port()
        started.append(Server([str(BIN / "authz"), "--db", store.url, "grpc", "--bind", f"127.0.0.1:{grpc_port}"],
                              grpc_port, env=gunicorn_env(store, policy_dir), log=tmp / "grpc.log"))
        nginx_port, nginx_upstream = free_port(), free_port()
        site = (loopback_listens((ROOT / "deploy" / "nginx" / "authz.conf").read_text(), "80", nginx_port)
                .replace("127.0.0.1:8080", f"127.0.0.1:{port}")
                .replace("127.0.0.1:9000", f"127.0.0.1:{nginx_upstream}"))
        (tmp / "nginx.conf").write_text(f"""
{"user root;" if os.geteuid() == 0 else ""}
daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy; fastcgi_temp_path {tmp}/fcgi;
    uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
{site}
    server {{ listen 127.0.0.1:{nginx_upstream}; location / {{ {ECHO_NGINX} }} }}
}}""")
        nginx = Server([nginx_binary(), "-c", str(tmp / "nginx.conf"), "-e", str(tmp / "nginx-error.log")],
                       nginx_port, log=tmp / "nginx.log")
        started.append(nginx)
        caddy_port, caddy_upstream = free_port(), free_port()
        caddyfile = ((ROOT / "deploy" / "caddy" / "Caddyfile").read_text()
                     .replace("admin off", "admin off\n\tauto_https off")
                     .replace("api.example.com {", f"http://api.example.com:{caddy_port} {{")
                     .replace(":80, :443 {", f"http://:{caddy_port} {{")
                     .replace("127.0.0.1:8080", f"127.0.0.1:{port}")
                     .replace("127.0.0.1:9000", f"127.0.0.1:{caddy_upstream}"))
        caddyfile += (f"\nhttp://:{caddy_upstream} {{\n"
                      "\theader X-Seen-Principal \"{header.X-Auth-Principal}\"\n"
                      "\theader X-Seen-Methods \"{header.X-Auth-Methods}\"\n"
                      "\trespond \"ok\" 200\n}\n")
        caddy = start_caddy(lambda *a, **k: Server(*a, **k), caddyfile, caddy_port, tmp)
        started.append(caddy)
        for server in (nginx, caddy):
            server.wait("/healthz")
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        grpc.channel_ready_future(channel).result(timeout=20)
        yield {"authz": authz, "nginx": nginx, "caddy": caddy,
               "grpc": external_auth_pb2_grpc.AuthorizationStub(channel)}
    finally:
        if channel is not None:
            channel.close()
        for server in reversed(started):
            server.stop()


def _seen(r: requests.Response) -> tuple[int, str | None, str | None]:
    if r.status_code != 200:
        return r.status_code, None, None
    return 200, r.headers.get("X-Seen-Principal") or None, r.headers.get("X-Seen-Methods") or None


def via_nginx(stack: dict, method: str, path: str, headers: dict) -> tuple[int, str | None, str | None]:
    return _seen(requests.request(method, stack["nginx"].url + path, headers={"Host": HOST, **headers}, timeout=5))


def via_caddy(stack: dict, method: str, path: str, headers: dict) -> tuple[int, str | None, str | None]:
    return _seen(requests.request(method, stack["caddy"].url + path, headers={"Host": HOST, **headers}, timeout=5))


def via_envoy_http(stack: dict, method: str, path: str, headers: dict) -> tuple[int, str | None, str | None]:
    allowed = {k: v for k, v in headers.items() if k.lower() in ENVOY_PASSES}
    r = requests.request(method, stack["authz"].url + "/ext-authz" + path,
                         headers={"Host": HOST, "Content-Length": "0", **allowed}, timeout=5)
    if r.status_code != 200:
        return r.status_code, None, None
    return 200, r.headers.get("X-Auth-Principal") or None, r.headers.get("X-Auth-Methods") or None


def via_envoy_grpc(stack: dict, method: str, path: str, headers: dict) -> tuple[int, str | None, str | None]:
    response = stack["grpc"].Check(envoy_check_request(method, path, headers), timeout=5)
    if response.status.code != 0:
        return response.denied_response.status.code, None, None
    sent = {h.header.key: h.header.value for h in response.ok_response.headers}
    return 200, sent.get("x-auth-principal") or None, sent.get("x-auth-methods") or None


DOORS: dict[str, Callable[[dict, str, str, dict], tuple[int, str | None, str | None]]] = {
    "nginx": via_nginx, "caddy": via_caddy, "envoy-http": via_envoy_http, "envoy-grpc": via_envoy_grpc}
