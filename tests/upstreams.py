"""Upstreams, doors and a raw HTTP client for the trust-boundary suites (issue 9).

Three parsers must agree for authz's decision to hold: the proxy's, authz's and the
upstream's. The upstreams here are real servers on loopback ports, each with a
different way of reading a request target:

- ``RawEcho``: a threaded socket server that records the request line and every
  header line byte for byte (name spelling, order, duplicates) and answers 200 with a
  JSON body of what it got;
- ``FlaskUpstream``: a Flask app under werkzeug's threaded server, catch-all
  ``<path:>`` handlers, recording which handler ran and the ``HTTP_X_AUTH_*`` keys of
  ``request.environ`` (werkzeug merges ``X-Auth_User`` into ``HTTP_X_AUTH_USER``);
- ``caddy_file_server``: Caddy's ``file_server`` (Go ``path.Clean``) over a root with
  ``admin/…`` ("ADMIN-SECRET") and ``static/x`` ("STATIC-FILE");
- ``node_upstream``: Node's ``http`` routing on ``new URL(req.url, base).pathname``
  (WHATWG), answering "ADMIN-HANDLER" for ``/admin/…``.

The doors (``nginx_site``, ``caddyfile``) are the ``deploy/`` files themselves,
re-pointed at loopback ports and nothing else.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.conftest import ROOT, Server, loopback_listens

PROTECTED_MARKERS = ("ADMIN-HANDLER", "APPROVE-HANDLER", "ADMIN-SECRET", "CAFE-HANDLER")


# --------------------------------------------------------------------------- client
@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body)


def build_request(method: str | bytes, target: str | bytes, headers=(), host: str | None = "api.example.com",
                  version: str = "HTTP/1.1", body: bytes = b"") -> bytes:
    """A request exactly as written: nothing is normalised, encoded or added but
    ``Host`` (when given), ``Content-Length`` (when there is a body) and ``Connection: close``."""
    as_bytes = [x if isinstance(x, bytes) else x.encode("latin-1") for x in (method, target)]
    lines = [as_bytes[0] + b" " + as_bytes[1] + b" " + version.encode()]
    if host is not None:
        lines.append(b"Host: " + host.encode("latin-1"))
    for name, value in headers:
        lines.append(name.encode("latin-1") + b": " + (value if isinstance(value, bytes) else value.encode("latin-1")))
    if body or method in ("POST", "PUT", b"POST", b"PUT"):
        lines.append(b"Content-Length: " + str(len(body)).encode())
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def raw_http(port: int, data: bytes, timeout: float = 5.0, tls: ssl.SSLContext | None = None,
             server_hostname: str = "api.example.com") -> Reply:
    """Send ``data`` as it is to 127.0.0.1:port and read the answer until the server closes
    (over TLS with ``tls``, SNI ``server_hostname``)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname=server_hostname)
        sock.sendall(data)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        sock.close()
    return parse_reply(b"".join(chunks))


def parse_reply(raw: bytes) -> Reply:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    if not lines or not lines[0].startswith(b"HTTP/"):
        return Reply(0, [], raw)
    status = int(lines[0].split()[1])
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((name.decode("latin-1"), value.strip().decode("latin-1")))
    reply = Reply(status, headers, body)
    if (reply.header("Transfer-Encoding") or "").lower() == "chunked":
        reply.body = _dechunk(body)
    return reply


def _dechunk(body: bytes) -> bytes:
    out, rest = b"", body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            break
        if size == 0:
            break
        out, rest = out + rest[:size], rest[size + 2:]
    return out


# --------------------------------------------------------------------------- raw echo
@dataclass
class Recorded:
    request_line: bytes
    header_lines: list[tuple[bytes, bytes]]
    body: bytes = b""

    @property
    def method(self) -> str:
        return self.request_line.split(b" ")[0].decode("latin-1")

    @property
    def target(self) -> bytes:
        return self.request_line.split(b" ")[1]

    def values(self, name: str) -> list[str]:
        """Every value of a header, the name compared case-insensitively with ``_`` read as ``-``."""
        wanted = name.lower().replace("_", "-")
        return [v.decode("latin-1") for k, v in self.header_lines
                if k.decode("latin-1").lower().replace("_", "-") == wanted]

    def identity_lines(self) -> list[tuple[str, str]]:
        """Every header line whose name reads as an identity header (``X-Auth-*``, any spelling)."""
        return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self.header_lines
                if k.decode("latin-1").lower().replace("_", "-").startswith("x-auth-")]


class RawEcho:
    """Records each request's line and header lines exactly as they arrived."""

    def __init__(self) -> None:
        self.records: list[Recorded] = []
        self._lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._serve, daemon=True, name="raw-echo").start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        data = b""
        try:
            while b"\r\n\r\n" not in data and len(data) < 1 << 20:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            header_lines = []
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                header_lines.append((name, value.strip(b" \t")))
            record = Recorded(lines[0], header_lines)
            length = next((int(v) for k, v in header_lines if k.lower() == b"content-length"), 0)
            while len(body) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                body += chunk
            record.body = body[:length]
            with self._lock:
                self.records.append(record)
            payload = json.dumps({
                "request_line": lines[0].decode("latin-1"),
                "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in header_lines],
            }).encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                         b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload)
        except OSError:
            pass
        finally:
            conn.close()

    def mark(self) -> int:
        return len(self.records)

    def since(self, mark: int) -> list[Recorded]:
        with self._lock:
            return list(self.records[mark:])

    def stop(self) -> None:
        self._stop = True
        self.sock.close()


# --------------------------------------------------------------------------- Flask
@dataclass
class FlaskRecord:
    handler: str
    method: str
    path: str
    identity: dict[str, str] = field(default_factory=dict)


class FlaskUpstream:
    """A Flask API with catch-all handlers under werkzeug's threaded server."""

    METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

    def __init__(self) -> None:
        from flask import Flask, request
        from werkzeug.serving import make_server

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.records: list[FlaskRecord] = []
        app = Flask("upstream", static_folder=None)
        records = self.records

        def answer(handler: str) -> str:
            identity = {k: v for k, v in request.environ.items() if k.upper().startswith("HTTP_X_AUTH")}
            records.append(FlaskRecord(handler, request.method, request.path, identity))
            return f"{handler} {request.method} {request.path}"

        def route(rule: str, handler: str, methods=self.METHODS) -> None:
            app.add_url_rule(rule, handler, lambda **_: answer(handler), methods=list(methods))

        route("/admin/<path:p>", "ADMIN-HANDLER")
        route("/static/<path:p>", "STATIC")
        route("/v1/orders/<oid>:approve", "APPROVE-HANDLER", ["POST"])
        route("/v1/orders/<oid>", "ORDERS", ["GET", "POST"])
        route("/mesh/<path:p>", "MESH-HANDLER")
        route("/svc/<path:p>", "SVC-HANDLER")
        route("/open/<path:p>", "OPEN-HANDLER")
        route("/signed/<path:p>", "SIGNED-HANDLER")
        route("/café/<path:p>", "CAFE-HANDLER")
        route("/<path:p>", "OTHER")
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True, name="flask-upstream").start()

    def mark(self) -> int:
        return len(self.records)

    def since(self, mark: int) -> list[FlaskRecord]:
        return list(self.records[mark:])

    def stop(self) -> None:
        self.server.shutdown()


# --------------------------------------------------------------------------- Caddy, Node
def caddy_binary() -> str:
    found = shutil.which("caddy")
    assert found, "caddy is not installed: `make test` installs it (apt-get install caddy)"
    return found


def start_caddy(text: str, port: int, directory: Path, env: dict | None = None) -> Server:
    """Caddy 2.6 with its state inside ``directory`` (and extra environment variables)."""
    directory.mkdir(parents=True, exist_ok=True)
    home = directory / "home"
    home.mkdir(exist_ok=True)
    (directory / "Caddyfile").write_text(text)
    full_env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / "config"),
                "XDG_DATA_HOME": str(home / "data"), **(env or {})}
    return Server([caddy_binary(), "run", "--config", str(directory / "Caddyfile"), "--adapter", "caddyfile"],
                  port, env=full_env, log=directory / "caddy.log")


def caddy_file_server(port: int, directory: Path) -> Server:
    """Go's ``path.Clean`` upstream: ``admin/*`` are secrets, ``static/x`` is public."""
    root = directory / "root"
    for name in ("admin/users", "admin/x", "admin/y"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("ADMIN-SECRET\n")
    (root / "static").mkdir(parents=True, exist_ok=True)
    (root / "static" / "x").write_text("STATIC-FILE\n")
    return start_caddy(f"{{\n\tadmin off\n\tauto_https off\n}}\n\nhttp://:{port} {{\n\troot * {root}\n"
                       "\tfile_server\n}\n", port, directory)


NODE_SERVER = r"""
const http = require('http');
const port = Number(process.argv[2]);
http.createServer((req, res) => {
  let pathname;
  try { pathname = new URL(req.url, 'http://upstream.invalid').pathname; }
  catch (e) { res.writeHead(400, {'content-type': 'text/plain'}); res.end('NODE-BAD-URL'); return; }
  let handler = 'NODE-OTHER';
  if (pathname === '/admin' || pathname.startsWith('/admin/')) handler = 'ADMIN-HANDLER';
  else if (pathname.startsWith('/static/')) handler = 'NODE-STATIC';
  res.writeHead(200, {'content-type': 'text/plain', 'connection': 'close'});
  res.end(handler + ' ' + req.method + ' ' + pathname);
}).listen(port, '127.0.0.1');
"""


def node_binary() -> str | None:
    return shutil.which("node") or shutil.which("nodejs")


def node_upstream(port: int, directory: Path) -> Server:
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "upstream.js"
    script.write_text(NODE_SERVER)
    return Server([node_binary(), str(script), str(port)], port, log=directory / "node.log")


# --------------------------------------------------------------------------- doors
def nginx_site(file: str, listen: int, port: int, authz_port: int, upstream_port: int,
               tls_dir: Path | None = None, proxy_secret: str | None = None) -> str:
    """A ``deploy/nginx`` file re-pointed at loopback ports: ``listen <listen>`` (any
    suffix kept, e.g. ``default_server``) → ``listen 127.0.0.1:<port>``, IPv6 listens
    dropped, authz and the API at their test ports, TLS files from ``tls_dir``."""
    text = (ROOT / "deploy" / "nginx" / file).read_text()
    text = loopback_listens(text, str(listen), port)
    text = text.replace("127.0.0.1:8080", f"127.0.0.1:{authz_port}").replace(
        "127.0.0.1:9000", f"127.0.0.1:{upstream_port}")
    if tls_dir is not None:
        text = text.replace("/etc/nginx/tls", str(tls_dir))
    if proxy_secret is not None:
        line = 'set $authz_proxy_secret "";'
        assert line in text, f"deploy/nginx/{file} has no `{line}` line to give the proxy secret"
        text = text.replace(line, f'set $authz_proxy_secret "{proxy_secret}";')
    return text


def start_nginx_at(directory: Path, sites: str, port: int) -> Server:
    from tests.conftest import nginx_binary, nginx_conf

    conf = nginx_conf(directory, sites)
    return Server([nginx_binary(), "-c", str(conf), "-e", str(directory / "nginx-error.log")], port,
                  log=directory / "nginx-out.log")


def caddyfile(port: int, authz_port: int, upstream_port: int) -> str:
    """``deploy/caddy/Caddyfile`` re-pointed: ``auto_https off``, the site on
    ``http://api.example.com:<port>`` (the host restriction kept), authz and the API at
    their test ports."""
    text = (ROOT / "deploy" / "caddy" / "Caddyfile").read_text()
    assert "api.example.com {" in text and "admin off" in text and ":80, :443 {" in text
    return (text.replace("admin off", "admin off\n\tauto_https off", 1)
            .replace("api.example.com {", f"http://api.example.com:{port} {{")
            .replace(":80, :443 {", f"http://:{port} {{")
            .replace("127.0.0.1:8080", f"127.0.0.1:{authz_port}")
            .replace("127.0.0.1:9000", f"127.0.0.1:{upstream_port}"))


def wait_listening(servers: list[Server], timeout: float = 20.0) -> None:
    """Wait until each server accepts TCP connections (no HTTP: a door may refuse a bare request)."""
    deadline = time.monotonic() + timeout
    for server in servers:
        while True:
            if server.proc.poll() is not None:
                raise RuntimeError(f"{server.proc.args[0]} exited: {server.output()}")
            try:
                socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"port {server.port} never opened: {server.output()}") from None
                time.sleep(0.05)


def gunicorn_args(port: int, directory: Path, workers: int = 2) -> list[str]:
    """authz as ``deploy/gunicorn.conf.py`` runs it, bound to a test port, logs in ``directory``."""
    from tests.conftest import BIN

    return [str(BIN / "gunicorn"), "-c", str(ROOT / "deploy" / "gunicorn.conf.py"), "--workers", str(workers),
            "--bind", f"127.0.0.1:{port}", "--access-logfile", str(directory / f"authz-access-{port}.log"),
            "--error-logfile", str(directory / f"authz-error-{port}.log"), "wsgi:app"]


def wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            requests.get(url, timeout=2)
            return
        except (requests.ConnectionError, requests.Timeout):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
