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
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import requests
import yaml
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2, external_auth_pb2_grpc

from authz.store import Store
from tests.conftest import BIN, ROOT, Server, free_port, gunicorn_env, loopback_listens, nginx_binary, start_caddy

HOST = "api.example.com"


def _passed_on(door: str) -> set[str]:
    """The client headers Envoy's HTTP check and Traefik's forwardAuth pass on to authz,
    as the shipped files list them (nginx and Caddy pass every one)."""
    if door == "envoy-http":
        config = yaml.safe_load((ROOT / "deploy" / "envoy" / "envoy-http.yaml").read_text())
        manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ext = next(f for f in manager["http_filters"] if f["name"] == "envoy.filters.http.ext_authz")
        return {p["exact"] for p in ext["typed_config"]["http_service"]["authorization_request"]["allowed_headers"]
                ["patterns"]}
    config = yaml.safe_load((ROOT / "deploy" / "traefik" / "dynamic.yaml").read_text())
    return {h.lower() for h in config["http"]["middlewares"]["authz"]["forwardAuth"]["authRequestHeaders"]}


ENVOY_PASSES, TRAEFIK_PASSES = _passed_on("envoy-http"), _passed_on("traefik")


def envoy_check_request(method, path, headers, certificate: str = "") -> external_auth_pb2.CheckRequest:
    http = attribute_context_pb2.AttributeContext.HttpRequest(
        id="1", method=method, path=path, host="api.example.com", scheme="https", protocol="HTTP/1.1",
        headers={":method": method, ":path": path, ":authority": "api.example.com", ":scheme": "https",
                 **{k.lower(): v for k, v in headers.items()}})
    attributes = attribute_context_pb2.AttributeContext(
        source=attribute_context_pb2.AttributeContext.Peer(
            address={"socket_address": {"address": "203.0.113.7", "port_value": 50000}},
            certificate=certificate),
        destination=attribute_context_pb2.AttributeContext.Peer(
            address={"socket_address": {"address": "10.0.0.5", "port_value": 8000}}),
        request=attribute_context_pb2.AttributeContext.Request(http=http))
    return external_auth_pb2.CheckRequest(attributes=attributes)


# What the upstreams behind nginx and Caddy answer with: response header <- the request
# header they received (what the door passed on after authz's answer).
ECHO = {"X-Seen-Principal": "X-Auth-Principal", "X-Seen-Methods": "X-Auth-Methods"}


def _nginx_echo(echo: dict[str, str]) -> str:
    return "".join(f'add_header {seen} "$http_{sent.lower().replace("-", "_")}" always; '
                   for seen, sent in echo.items()) + 'return 200 "ok";'


def _caddy_echo(echo: dict[str, str]) -> str:
    return "".join(f'\theader {seen} "{{header.{sent}}}"\n' for seen, sent in echo.items())


@contextlib.contextmanager
def doors(tmp: Path, store: Store, policy_dir: Path, echo: dict[str, str] = ECHO) -> Iterator[dict]:
    """authz (gunicorn, 2 workers, and ``authz grpc``), nginx and Caddy, stopped after.
    ``echo``: the request headers the upstreams send back, under which names."""
    started: list[Server] = []
    channel = None
    try:
        port = free_port()
        authz = Server([str(BIN / "gunicorn"), "--workers", "2", "--bind", f"127.0.0.1:{port}", "wsgi:app"],
                       port, env=gunicorn_env(store, policy_dir), log=tmp / "gunicorn.log")
        started.append(authz.wait())
        grpc_port = free_port()
        grpc_server = Server([str(BIN / "authz"), "--db", store.url, "grpc", "--bind", f"127.0.0.1:{grpc_port}"],
                             grpc_port, env=gunicorn_env(store, policy_dir), log=tmp / "grpc.log")
        started.append(grpc_server)
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
    server {{ listen 127.0.0.1:{nginx_upstream}; location / {{ {_nginx_echo(echo)} }} }}
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
        caddyfile += f"\nhttp://:{caddy_upstream} {{\n{_caddy_echo(echo)}\trespond \"ok\" 200\n}}\n"
        caddy = start_caddy(lambda *a, **k: Server(*a, **k), caddyfile, caddy_port, tmp)
        started.append(caddy)
        for server in (nginx, caddy):
            server.wait("/healthz")
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        grpc.channel_ready_future(channel).result(timeout=20)
        yield {"authz": authz, "nginx": nginx, "caddy": caddy, "grpc_server": grpc_server,
               "grpc": external_auth_pb2_grpc.AuthorizationStub(channel)}
    finally:
        if channel is not None:
            channel.close()
        for server in reversed(started):
            server.stop()


@contextlib.contextmanager
def door_stack(tmp_path_factory, new_store, name: str, files: dict[str, str | bytes | dict],
               echo: dict[str, str] = ECHO, prepare: Callable[[Store], dict] | None = None) -> Iterator[dict]:
    """``doors`` for a test module: a fresh store and policy directory (``files`` by name:
    a dict is written as JSON), ``prepare(store)`` before any server starts (its dict is
    merged into what is yielded), the store discarded after. Yields ``doors``' servers
    with ``store`` and ``tmp``."""
    tmp = tmp_path_factory.mktemp(name)
    store = new_store(tmp)
    try:
        policy_dir = tmp / "policies"
        policy_dir.mkdir()
        for file, content in files.items():
            (policy_dir / file).write_bytes(content if isinstance(content, bytes) else
                                            (content if isinstance(content, str) else json.dumps(content)).encode())
        prepared = prepare(store) if prepare is not None else {}
        with doors(tmp, store, policy_dir, echo) as started:
            yield {**started, **prepared, "store": store, "tmp": tmp}
    finally:
        new_store.discard(store)


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
