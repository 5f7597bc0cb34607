"""Serving benchmarks for issue 13: real servers on loopback, driven by wrk.

- ``serving``: nginx ``auth_request`` (``deploy/nginx/authz.conf``, re-pointed) in front of
  ``authz serve`` vs the same nginx in front of a no-op Flask endpoint under gunicorn
  sync; and directly, ``authz serve`` vs a no-op WSGI app (and a no-op Flask app) under
  the same granian settings. Every server runs the whole time; each round runs every
  (case, server) once, the order reversed every other round; medians of the rounds.
- ``routes``: 10,000 routes — ``decide()`` for the last route vs 10 routes, policy load,
  ``authz policy check``, and latency while ``authz serve`` reloads them under load.
- ``keys``: 1,000,000 API keys vs 1,000 — API-key ``decide()`` and the store lookup.
- ``slow``: 200 idle + 200 trickling connections held open against ``authz serve``
  while wrk measures decisions through nginx.

Every server runs in its own session (process group) and is stopped in ``finally``;
every load is bounded in time (``wrk -d``).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import selectors
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from authz.serve import ServeOptions  # noqa: E402

BENCH = ROOT / "bench"
BIN = Path(sys.executable).parent
NGINX_SITE = ROOT / "deploy" / "nginx" / "authz.conf"
MTLS_SITE = ROOT / "deploy" / "nginx" / "authz-mtls.conf"
API_HOST = "api.example.com"
WORKERS = 2
THREADS = ServeOptions().threads  # authz serve's default blocking threads per worker
# The granian settings `authz serve` uses (authz/serve.py), for the no-op baselines.
GRANIAN = ["--interface", "wsgi", "--http", "1", "--no-ws", "--workers", str(WORKERS),
           "--blocking-threads", str(THREADS), "--backlog", "2048", "--http1-header-read-timeout", "5000",
           "--http1-keep-alive", "--http1-buffer-size", str(64 * 1024), "--no-access-log", "--log-level", "warning"]
GUNICORN_SYNC = ["--workers", str(WORKERS), "--worker-class", "sync", "--backlog", "2048", "--log-level", "warning"]
NGINX_WORKERS = 1
WRK = ["-t1", "-c8"]


# ----------------------------------------------------------------------------- processes
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group, SIGKILL after 15 s."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    except ProcessLookupError:
        pass


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            requests.get(url, timeout=2)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


@contextmanager
def server(argv: list[str], ready_url: str, log: Path, env: dict | None = None, cwd: Path | None = None):
    """A server in its own process group, stopped (group-wide) on exit."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_http(ready_url, proc, log)
        yield proc
    finally:
        stop(proc)


def authz_env(db: Path, policy_dir: Path) -> dict:
    return {**os.environ, "AUTHZ_DB": str(db), "AUTHZ_POLICY_DIR": str(policy_dir),
            "AUTHZ_DECISION_LOG": str(db.parent / "decisions.log")}


def authz_serve(stack: ExitStack, tmp: Path, env: dict, name: str = "authz") -> int:
    """``authz serve`` with its defaults but ``--workers 2``; returns its port."""
    port = free_port()
    stack.enter_context(server([str(BIN / "authz"), "serve", "--bind", f"127.0.0.1:{port}", "--workers",
                                str(WORKERS)], f"http://127.0.0.1:{port}/readyz", tmp / f"{name}.log", env=env))
    return port


def granian_noop(stack: ExitStack, tmp: Path, target: str) -> int:
    port = free_port()
    stack.enter_context(server([str(BIN / "granian"), *GRANIAN, "--host", "127.0.0.1", "--port", str(port),
                                "--working-dir", str(BENCH), target], f"http://127.0.0.1:{port}/auth-request",
                               tmp / f"granian-{target.replace(':', '-')}.log", cwd=BENCH))
    return port


def gunicorn_noop(stack: ExitStack, tmp: Path) -> int:
    port = free_port()
    stack.enter_context(server([str(BIN / "gunicorn"), *GUNICORN_SYNC, "--bind", f"127.0.0.1:{port}",
                                "noop_auth:flask_app"], f"http://127.0.0.1:{port}/auth-request",
                               tmp / "gunicorn-noop.log", cwd=BENCH))
    return port


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if not found:
        raise SystemExit("nginx is not installed: `make servers` installs it (apt-get install nginx-light)")
    return found


def _repoint(site_file: Path, replacements: tuple[tuple[str, str], ...]) -> str:
    site = site_file.read_text()
    for old, new in replacements:
        if old not in site:
            raise RuntimeError(f"{site_file} no longer contains {old!r}: update bench/serving.py")
        site = site.replace(old, new)
    return site


def _run_nginx(stack: ExitStack, directory: Path, sites: str, ready_url: str) -> None:
    conf = directory / "nginx.conf"
    conf.write_text(f"""
{"user root;" if os.geteuid() == 0 else ""}
daemon off;
worker_processes {NGINX_WORKERS};
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {directory}/body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
{sites}
}}
""")
    binary = nginx_binary()
    check = subprocess.run([binary, "-t", "-c", str(conf), "-e", str(directory / "t.log")],
                           capture_output=True, text=True, check=False, timeout=30)
    if check.returncode:
        raise RuntimeError(check.stderr)
    stack.enter_context(server([binary, "-c", str(conf), "-e", str(directory / "error.log")],
                               ready_url, directory / "out.log"))


def nginx(stack: ExitStack, tmp: Path, auth_port: int, name: str) -> int:
    """Real nginx running ``deploy/nginx/authz.conf`` with its addresses re-pointed: ``listen 80``
    to a loopback port, authz (``127.0.0.1:8080``) to ``auth_port``, and the API
    (``127.0.0.1:9000``) to a server block of the same nginx that answers ``return 200``
    (the protected location ``proxy_pass``es to it, after ``auth_request``)."""
    directory = tmp / name
    directory.mkdir()
    port, api_port = free_port(), free_port()
    site = _repoint(NGINX_SITE, (("listen 80", f"listen 127.0.0.1:{port}"),
                                 ("127.0.0.1:8080", f"127.0.0.1:{auth_port}"),
                                 ("127.0.0.1:9000", f"127.0.0.1:{api_port}")))
    api = f"    server {{ listen 127.0.0.1:{api_port}; access_log off; location / {{ return 200; }} }}\n"
    _run_nginx(stack, directory, api + site, f"http://127.0.0.1:{port}/")
    return port


def nginx_mtls(stack: ExitStack, tmp: Path, auth_port: int, name: str, tls: dict[str, bytes]) -> int:
    """Real nginx running ``deploy/nginx/authz-mtls.conf`` (re-pointed as ``nginx`` does, its
    ``/etc/nginx/tls`` files made here), behind a front ``server`` of the same nginx that wrk
    talks plain HTTP to: it ``proxy_pass``es every request over TLS to the mTLS door,
    presenting the client certificate (wrk cannot), on kept-alive connections with TLS
    session reuse. The front hop costs the same in front of authz and of the baseline.
    ``tls``: ``server.pem``, ``server.key``, ``mesh-ca.pem``, ``client.pem`` (leaf and
    intermediate), ``client.key``, ``server-ca.pem``."""
    directory = tmp / name
    tls_dir = directory / "tls"
    tls_dir.mkdir(parents=True)
    for file, data in tls.items():
        (tls_dir / file).write_bytes(data)
    port, tls_port, api_port = free_port(), free_port(), free_port()
    site = _repoint(MTLS_SITE, (("listen 443", f"listen 127.0.0.1:{tls_port}"), ("/etc/nginx/tls", str(tls_dir)),
                                ("127.0.0.1:8080", f"127.0.0.1:{auth_port}"),
                                ("127.0.0.1:9000", f"127.0.0.1:{api_port}")))
    front = f"""
    server {{ listen 127.0.0.1:{api_port}; access_log off; location / {{ return 200; }} }}
    upstream mtls_door {{ server 127.0.0.1:{tls_port}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass https://mtls_door;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host {API_HOST};
            proxy_ssl_server_name on;
            proxy_ssl_name {API_HOST};
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {tls_dir}/server-ca.pem;
            proxy_ssl_certificate {tls_dir}/client.pem;
            proxy_ssl_certificate_key {tls_dir}/client.key;
            proxy_ssl_session_reuse on;
        }}
    }}
"""
    _run_nginx(stack, directory, front + site, f"http://127.0.0.1:{port}/")
    return port


# ----------------------------------------------------------------------------- wrk
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * _UNITS[unit]


def _lua(text: str) -> str:
    """A Lua string literal: plain ASCII as is, every other byte as a decimal escape."""
    plain = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -_.:/=+,;")
    return '"' + "".join(chr(b) if b in plain else f"\\{b:03d}" for b in text.encode()) + '"'


def each_request_script(path: Path, target: str, header_sets: list[dict]) -> Path:
    """A wrk Lua script sending ``target`` with the next of ``header_sets`` on every request
    (a fresh DPoP proof or signature each time: wrk alone repeats one request). One wrk
    thread (``-t1``) walks the list once; past its end it starts over, and the replays
    that follows are refused and counted as non-2xx."""
    lines = ["local requests = {}"]
    for number, headers in enumerate(header_sets, 1):
        fields = ", ".join(f"[{_lua(k)}] = {_lua(v)}" for k, v in headers.items())
        lines.append(f"requests[{number}] = {{{fields}}}")
    lines += ["local next_one = 0",
              "request = function()",
              "  next_one = next_one % #requests + 1",
              f"  return wrk.format('GET', {_lua(target)}, requests[next_one])",
              "end"]
    path.write_text("\n".join(lines) + "\n")
    return path


def wrk(url: str, headers: dict, seconds: float, *, strict: bool = True, timeout: str = "2s",
        connections: list[str] = WRK, script: Path | None = None) -> dict:
    """One wrk run: req/s, p50/p99/max in ms, timeouts and other errors, non-2xx count.
    ``script``: a Lua script choosing each request's headers (``each_request_script``)."""
    args = ["wrk", *connections, f"-d{seconds}s", "--latency", "--timeout", timeout]
    for k, v in headers.items():
        args += ["-H", f"{k}: {v}"]
    if script is not None:
        args += ["-s", str(script)]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    non2xx = int((re.search(r"Non-2xx or 3xx responses: (\d+)", out) or [0, 0])[1])
    if strict and non2xx:
        raise RuntimeError(f"{non2xx} requests were not allowed:\n{out}")
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    latency = re.search(r"^\s+Latency\s+(\S+)\s+(\S+)\s+(\S+)", out, re.M)

    def percent(q: int) -> float:
        return _ms(re.search(rf"^\s+{q}%\s+(\S+)", out, re.M).group(1))

    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50": percent(50), "p99": percent(99),
            "max": _ms(latency.group(3)), "non2xx": non2xx,
            "timeouts": int(errors.group(4)) if errors else 0,
            "errors": sum(int(e) for e in errors.groups()[:3]) if errors else 0}


def direct(port: int, target: str, headers: dict, host: str | None = None) -> tuple[str, dict]:
    """A request as nginx's auth subrequest sends it, straight to an auth server."""
    extra = {"X-Original-Host": host} if host else {}
    return (f"http://127.0.0.1:{port}/auth-request",
            {"X-Original-URI": target, "X-Original-Method": "GET", **extra, **headers})


def via_nginx(port: int, target: str, headers: dict) -> tuple[str, dict]:
    return f"http://127.0.0.1:{port}{target}", {"Host": API_HOST, **headers}


# ----------------------------------------------------------------------------- 1, 2: serving
MTLS_CASE = "mTLS, repeated certificate"  # through nginx: authz-mtls.conf, behind a front hop
E2E_CASES = ("API key", "Basic (cached)", "JWT RS256, repeated token", MTLS_CASE)
DIRECT_CASES = E2E_CASES
SERVERS = {  # name: (door, server)
    "nginx → authz serve": ("nginx", "authz"),
    "nginx → no-op Flask, gunicorn sync": ("nginx", "gunicorn"),
    "authz serve": ("direct", "authz"),
    "no-op WSGI, granian": ("direct", "wsgi"),
    "no-op Flask, granian": ("direct", "flask"),
}


def serving(tmp: Path, db: Path, policy_dir: Path, cases: dict, seconds: float, rounds: int,
            tls: dict[str, bytes]) -> dict:
    """{case: {server name: median wrk result}} (medians of req/s, p50, p99 over the rounds).
    ``tls``: the mTLS door's files (see ``nginx_mtls``); its client certificate is the one
    the mTLS case's headers carry when it is asked directly."""
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: `make bench` installs it (apt-get install wrk)")
    runs: dict = {case: {name: [] for name, (door, _) in SERVERS.items() if door == "direct" or case in E2E_CASES}
                  for case in DIRECT_CASES}
    with ExitStack() as stack:
        ports = {"authz": authz_serve(stack, tmp, authz_env(db, policy_dir)),
                 "wsgi": granian_noop(stack, tmp, "noop_auth:app"),
                 "flask": granian_noop(stack, tmp, "noop_auth:flask_app"),
                 "gunicorn": gunicorn_noop(stack, tmp)}
        ports["nginx authz"] = nginx(stack, tmp, ports["authz"], "nginx-authz")
        ports["nginx gunicorn"] = nginx(stack, tmp, ports["gunicorn"], "nginx-gunicorn")
        ports["nginx-mtls authz"] = nginx_mtls(stack, tmp, ports["authz"], "nginx-mtls-authz", tls)
        ports["nginx-mtls gunicorn"] = nginx_mtls(stack, tmp, ports["gunicorn"], "nginx-mtls-gunicorn", tls)

        def request(case: str, name: str) -> tuple[str, dict]:
            door, backend = SERVERS[name]
            target, headers = cases[case]
            if door == "nginx" and case == MTLS_CASE:  # the front hop presents the certificate
                return via_nginx(ports[f"nginx-mtls {backend}"], target, {})
            if door == "nginx":
                return via_nginx(ports[f"nginx {backend}"], target, headers)
            return direct(ports[backend], target, headers)

        plan = [(case, name) for case in DIRECT_CASES for name in runs[case]]
        # Warm-up: imports, caches (Basic's KDF result, JWT keys) in every worker. While a
        # worker runs the password KDF, concurrent Basic requests are refused (401, busy):
        # counted, not fatal, here and in the measured runs (the cache lasts 300 s).
        for case, name in plan:
            wrk(*request(case, name), 1, strict=False)
        for number in range(rounds):
            for case, name in plan if number % 2 == 0 else reversed(plan):
                runs[case][name].append(wrk(*request(case, name), seconds, strict=False))
    return {case: {name: {**{k: statistics.median(r[k] for r in results) for k in ("rps", "p50", "p99")},
                          "failed": sum(r["non2xx"] + r["errors"] + r["timeouts"] for r in results)}
                   for name, results in by_server.items()} for case, by_server in runs.items()}


def serving_report(results: dict, seconds: float, rounds: int) -> list[str]:
    lines = [
        "## Serving: through nginx and directly (issue 13)", "",
        f"All servers run at once on loopback, sharing the 2 cores with wrk (`wrk {' '.join(WRK)} -d{seconds}s`); "
        f"{rounds} rounds, each running every (route, server) pair once, in reverse order every other round, "
        "after a 1 s warm-up of each; the table gives medians of the rounds. **Through nginx**: "
        "`deploy/nginx/authz.conf` as shipped (upstream keepalive) with its addresses re-pointed — `listen 80` to a "
        "loopback port, `127.0.0.1:8080` to the auth server, `127.0.0.1:9000` to a `return 200` server block in "
        f"the same nginx (`worker_processes {NGINX_WORKERS}`); wrk asks for the API's URL with `Host: {API_HOST}`. "
        f"authz is `authz serve --workers {WORKERS}` (granian, its defaults otherwise); the baseline is a no-op "
        f"Flask endpoint answering 200 with `X-Auth-User` (`bench/noop_auth.py`) under gunicorn "
        f"`{' '.join(GUNICORN_SYNC)}`. **Directly**: `/auth-request` with the nginx subrequest's headers, "
        f"`authz serve` against a bare no-op WSGI callable (the target) and a no-op Flask app under "
        f"`granian {' '.join(GRANIAN)}` — the settings `authz serve` passes to granian. **mTLS** through nginx "
        "is `deploy/nginx/authz-mtls.conf` (re-pointed likewise, TLS files made by the bench) behind a front "
        "`server` of the same nginx, which wrk asks in plain HTTP and which presents the client certificate "
        "to the mTLS door (wrk cannot) on kept-alive TLS connections: that hop costs the same in front of authz "
        "and of the baseline. Directly, mTLS sends the certificate headers that door sets "
        "(`X-SSL-Client-Cert`, leaf URL-encoded).", "",
        "| route | through nginx: authz req/s | nginx: no-op gunicorn sync req/s | ratio (≥ 1.5x) | "
        "direct: authz req/s | no-op WSGI req/s | ratio (≥ 0.9x) | no-op Flask (granian) req/s | "
        "authz p50 / p99 ms (nginx) | authz p50 / p99 ms (direct) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case, by in results.items():
        ours, base = by["authz serve"], by["no-op WSGI, granian"]
        e2e = by.get("nginx → authz serve")
        if e2e:
            gun = by["nginx → no-op Flask, gunicorn sync"]
            e2e_cells = (f"{e2e['rps']:.0f} | {gun['rps']:.0f} | {e2e['rps'] / gun['rps']:.2f}x",
                         f"{e2e['p50']:.2f} / {e2e['p99']:.2f}")
        else:
            e2e_cells = ("— | — | —", "—")
        lines.append(f"| {case} | {e2e_cells[0]} | {ours['rps']:.0f} | {base['rps']:.0f} | "
                     f"{ours['rps'] / base['rps']:.2f}x | {by['no-op Flask, granian']['rps']:.0f} | {e2e_cells[1]} | "
                     f"{ours['p50']:.2f} / {ours['p99']:.2f} |")
    failed = [f"{name} on {case}: {r['failed']}" for case, by in results.items() for name, r in by.items()
              if r["failed"]]
    flask = ", ".join(f"{case} {by['authz serve']['rps'] / by['no-op Flask, granian']['rps']:.2f}x"
                      for case, by in results.items())
    return [*lines, "", "Requests not answered 2xx in the measured runs (non-2xx, socket errors, timeouts): "
            + ("; ".join(failed) if failed else "none") + ".", "",
            "The direct target (≥ 0.9x a bare no-op WSGI callable under the same server) is out of reach of a "
            "decision made in Python: the bare callable answers in the server's own overhead, so 0.9x of its "
            "rate leaves a few µs of Python per request, while a whole WSGI request through authz costs tens of µs "
            "in process (the in-process table). Against a no-op *Flask* endpoint under "
            f"the same granian settings, authz serves: {flask}.", ""]


# ----------------------------------------------------------------------------- proof of possession
PER_SECOND = 8000  # fresh proofs or signatures made per second of a run (above what one run sends)


def pop_section(tmp: Path, db: Path, policy_dir: Path, cases: dict, seconds: float, rounds: int) -> dict:
    """Issue 16's end-to-end rows: through nginx (``deploy/nginx/authz.conf``) in front of
    ``authz serve``, each case alternately; a case whose headers are a callable gets a new
    header set (a fresh proof or signature) on every request, made before the run.
    {case: median wrk result}."""
    runs: dict[str, list] = {case: [] for case in cases}
    with ExitStack() as stack:
        port = nginx(stack, tmp, authz_serve(stack, tmp, authz_env(db, policy_dir), "authz-pop"), "nginx-pop")

        def run(case: str, length: float) -> dict:
            target, headers = cases[case]
            url, static = via_nginx(port, target, {} if callable(headers) else headers)
            script = None
            if callable(headers):
                script = each_request_script(tmp / "each.lua", target,
                                             [{"Host": API_HOST, **headers()} for _ in range(int(PER_SECOND * length))])
            return wrk(url, static, length, strict=False, script=script)

        for case in cases:  # warm-up
            run(case, 1)
        for number in range(rounds):
            for case in cases if number % 2 == 0 else reversed(list(cases)):
                runs[case].append(run(case, seconds))
    return {case: {**{k: statistics.median(r[k] for r in results) for k in ("rps", "p50", "p99")},
                   "failed": sum(r["non2xx"] + r["errors"] + r["timeouts"] for r in results)}
            for case, results in runs.items()}


def pop_report(results: dict, in_process: dict, seconds: float, rounds: int) -> list[str]:
    lines = ["## Proof of possession: DPoP and signed requests (issue 16)", "",
             f"In-process `decide()` p50 from the table above; end to end through nginx (`deploy/nginx/authz.conf`, "
             f"as in the serving section) in front of `authz serve --workers {WORKERS}`, `wrk {' '.join(WRK)} "
             f"-d{seconds}s`, {rounds} alternating rounds, medians. Rows marked *fresh* send a new proof or "
             "signature on every request (made before the run, sent by a wrk Lua script), each spending a "
             "replay-cache entry in the store.", "",
             "| case | decide() p50 µs | through nginx req/s | p50 / p99 ms | not 2xx |", "|---|---:|---:|---:|---:|"]
    for case, r in results.items():
        latency = in_process.get(f"{case}: decide()")
        p50 = f"{latency[0]:.1f}" if latency else "—"
        lines.append(f"| {case} | {p50} | {r['rps']:.0f} | {r['p50']:.2f} / {r['p99']:.2f} | {r['failed']} |")
    return [*lines, ""]


# ----------------------------------------------------------------------------- 3: routes
def many_routes(count: int) -> dict:
    """``count`` routes: nine in ten for one host each (``t{i}.example.com``), one in ten
    host-less with globs (``/h{i}/items/*``); at ``count // 2`` (for large tables) a route
    that an earlier one shadows, which ``authz policy check`` must report."""
    routes = []
    for i in range(count):
        if i % 10 == 5:
            routes.append({"id": f"r{i}", "match": {"paths": [f"/h{i}/items/*", f"/h{i}/docs/**"],
                                                     "methods": ["GET", "POST"]}, "require": "key"})
        else:
            routes.append({"id": f"r{i}", "match": {"hosts": [f"t{i}.example.com"],
                                                     "paths": [f"/t{i}/items", f"/t{i}/items/**"],
                                                     "methods": ["GET"]}, "require": "key"})
    if count >= 100:
        routes[count // 2] = {"id": "shadowed", "match": {"hosts": ["t1.example.com"], "paths": ["/t1/items/x"],
                                                          "methods": ["GET"]}, "require": "key"}
    return {"description": f"{count} generated routes", "authenticators": {"key": {"type": "api_key"}},
            "routes": routes}


def last_route(count: int) -> tuple[str, str]:
    i = count - 1
    assert i % 10 != 5
    return f"t{i}.example.com", f"/t{i}/items/42"


def write_policy(directory: Path, document: dict) -> None:
    directory.mkdir(exist_ok=True)
    new = directory / ".routes.json.new"
    new.write_text(json.dumps(document))
    os.replace(new, directory / "routes.json")  # atomic: the watcher never sees half a file


def routes_section(tmp: Path, store, key: str, trials, n: int, count: int, seconds: float,
                   reload_rounds: int) -> dict:
    from authz.authenticators import Context
    from authz.engine import DecisionEngine
    from authz.policy import load_policy
    from authz.request import CheckRequest, Headers

    big, small = tmp / "routes-10000", tmp / "routes-10"
    write_policy(big, many_routes(10_000))
    write_policy(small, many_routes(10))
    out: dict = {}

    loads = []
    for _ in range(3):
        start = time.perf_counter()
        policy = load_policy(big, Context(store=store))
        loads.append(time.perf_counter() - start)
    out["load"] = (min(loads), statistics.median(loads))
    assert len(policy.routes.routes) == 10_000

    measures = {}
    for label, directory, routes in (("10 routes", small, 10), ("10,000 routes", big, 10_000)):
        engine = DecisionEngine(load_policy(directory, Context(store=store)))
        host, target = last_route(routes)

        def decide(engine=engine, host=host, target=target):
            return engine.decide(CheckRequest.build("GET", target, host, "http", Headers({"X-API-Key": key})))

        assert decide().allowed, label
        measures[f"{label}: decide(), last route"] = (decide, n)

        def unmatched(engine=engine):
            return engine.decide(CheckRequest.build("GET", "/nowhere/x", "t1.example.com", "http",
                                                    Headers({"X-API-Key": key})))

        assert not unmatched().allowed
        measures[f"{label}: decide(), no route matches"] = (unmatched, n)
    deadline = time.perf_counter() + 2.0
    while time.perf_counter() < deadline:
        for func, _ in measures.values():
            func()
    out["decide"] = trials(measures, count)

    # Three runs, as the load: one run is one sample of a shared VM's noise.
    runs = []
    try:
        for _ in range(3):
            start = time.perf_counter()
            check = subprocess.run([str(BIN / "authz"), "policy", "check", str(big)], capture_output=True,
                                   text=True, timeout=300, check=False)
            runs.append(time.perf_counter() - start)
        out["check"] = (min(runs), statistics.median(runs), check.returncode,
                        sum(line.startswith("warning:") for line in check.stderr.splitlines() +
                            check.stdout.splitlines()), (check.stdout + check.stderr).strip().splitlines()[-1:])
    except subprocess.TimeoutExpired:
        out["check"] = (None, None, None, None, ["timed out after 300 s"])

    out["reload"] = reload_under_load(tmp, store.path, key, seconds, reload_rounds)
    return out


def _revision_seen(port: int, revision: str | None, stop_at: float, seen: list) -> None:
    """Poll /readyz on fresh connections (any worker) until a revision other than ``revision`` shows."""
    start = time.perf_counter()
    while time.perf_counter() < stop_at:
        try:
            body = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5,
                                headers={"Connection": "close"}).json()
            if body.get("revision") not in (None, revision):
                seen.append(time.perf_counter() - start)
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)


def reload_under_load(tmp: Path, db: Path, key: str, seconds: float, rounds: int) -> dict:
    """wrk on the last of 10,000 routes, straight to ``authz serve``: a window with no
    reload, then a window during which the policy file is rewritten (a new revision) 1 s in."""
    directory = tmp / "routes-reload"
    document = many_routes(10_000)
    write_policy(directory, document)
    host, target = last_route(10_000)
    before, during, seen = [], [], []
    with ExitStack() as stack:
        port = authz_serve(stack, tmp, authz_env(db, directory), "authz-reload")
        url, headers = direct(port, target, {"X-API-Key": key}, host)
        wrk(url, headers, 1)
        for number in range(rounds):
            before.append(wrk(url, headers, seconds, timeout="30s"))
            revision = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5).json().get("revision")
            result: dict = {}
            load = threading.Thread(target=lambda result=result: result.update(
                wrk(url, headers, seconds, timeout="30s")))
            load.start()
            time.sleep(1)
            document["description"] = f"10000 generated routes, revision {number + 1}"
            write_policy(directory, document)
            _revision_seen(port, revision, time.perf_counter() + seconds + 30, seen)
            load.join()
            if not result:
                raise RuntimeError("wrk failed during the reload window (see the traceback above)")
            during.append(result)
            time.sleep(3)  # the other worker's reload must not spill into the next quiet window
    return {"before": before, "during": during, "seen": seen, "seconds": seconds}


def routes_report(out: dict, n: int, count: int) -> list[str]:
    decide = out["decide"]
    small, big = decide["10 routes: decide(), last route"], decide["10,000 routes: decide(), last route"]
    seconds, median_seconds, code, warnings, last = out["check"]
    reload = out["reload"]

    def window(runs: list[dict]) -> str:
        return (f"{statistics.median(r['rps'] for r in runs):.0f} | {statistics.median(r['p50'] for r in runs):.2f} | "
                f"{statistics.median(r['p99'] for r in runs):.2f} | {max(r['max'] for r in runs):.1f} | "
                f"{sum(r['non2xx'] + r['timeouts'] + r['errors'] for r in runs)}")

    return [
        "## 10,000 routes (issue 13)", "",
        "A generated policy (`bench/serving.py` `many_routes`): nine routes in ten for one host each "
        "(`t{i}.example.com`, `/t{i}/items`, `/t{i}/items/**`, GET), one in ten host-less with globs "
        "(`/h{i}/items/*`, `/h{i}/docs/**`); the 10,000-route policy has one route shadowed by an earlier one "
        "in the middle. Every route requires an API key. `decide()` asks for the last route "
        f"(`t9999.example.com/t9999/items/42`, API key) or for a path no route matches; {count} round-robin trials "
        f"of {n} calls, best trial's p50/p99 and median of the trials' p50 (as the in-process table).", "",
        "| case | p50 µs (best trial) | p99 µs (same trial) | p50 µs (median of trials) |", "|---|---:|---:|---:|",
        *[f"| {name} | {p50:.1f} | {p99:.1f} | {median:.1f} |" for name, (p50, p99, median) in decide.items()], "",
        f"- Last route, 10,000 vs 10 routes: **{big[0] / small[0]:.2f}x** (best trials), "
        f"{big[2] / small[2]:.2f}x (medians); target ≤ 2x.",
        f"- `authz.policy.load_policy` of the 10,000 routes: **{out['load'][0]:.2f} s** (best of 3; median "
        f"{out['load'][1]:.2f} s); target ≤ 1 s.",
        ("- `authz policy check` on them (the CLI as a subprocess, wall time including start-up): "
         + (f"**{seconds:.2f} s** (best of 3; median {median_seconds:.2f} s), exit {code}, {warnings} warning(s) "
            "(the shadowed route); target ≤ 1.5 s."
            if seconds is not None else f"{last[0]}.")),
        "",
        f"Reload under load: `authz serve --workers {WORKERS}` on the 10,000 routes, `wrk {' '.join(WRK)} "
        f"-d{reload['seconds']}s --timeout 30s` on the last route straight to `/auth-request`; a window without "
        "reload, then a window in which the policy file is atomically rewritten (a new revision) 1 s in. "
        f"{len(reload['during'])} round(s): medians of req/s, p50, p99; the largest max; failed = non-2xx + "
        "socket errors + timeouts. The new revision was first seen on `/readyz` (any worker) "
        + ", ".join(f"{s:.1f} s" for s in reload["seen"]) + " after the rewrite.", "",
        "| window | req/s | p50 ms | p99 ms | max ms | failed |", "|---|---:|---:|---:|---:|---:|",
        f"| no reload | {window(reload['before'])} |",
        f"| reload of 10,000 routes | {window(reload['during'])} |", "",
    ]


# ----------------------------------------------------------------------------- 4: keys
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def key_store(path: Path, total: int, principals: int = 1000):
    """A store with ``total`` API keys: one created by ``Admin.keys.create`` (returned), the
    rest inserted in bulk with the columns the SQLite key table writes (random SHA-256-sized
    fingerprints, ``key_`` ids, display forms), spread over ``principals`` clients."""
    from authz.admin import Admin
    from authz.store import open_store

    store = open_store(path, last_used_interval=30)
    store.migrate()
    _, key = Admin(store).keys.create("bench-real", ["orders:read"])
    start = time.perf_counter()
    rng = random.Random(13)
    sample: list[str] = []
    with sqlite3.connect(path) as db:
        now = time.time()
        db.executemany("INSERT INTO principals (name, kind, created_at, updated_at) VALUES (?, 'client', ?, ?)",
                       ((f"partner-{i}", now, now) for i in range(principals)))
        ids = [row[0] for row in db.execute("SELECT id FROM principals WHERE name LIKE 'partner-%'")]

        def rows():
            for i in range(total - 1):
                body = "".join(rng.choices(_ALPHABET, k=8))
                fingerprint = os.urandom(32).hex()
                if i % max(1, total // 2000) == 0:
                    sample.append(fingerprint)
                yield ("key_" + "".join(rng.choices(_ALPHABET, k=16)), ids[i % len(ids)], fingerprint,
                       f"sk_live_{body[:4]}…{body[4:]}", "live", "orders:read", "", "active", now - i)

        db.executemany("INSERT INTO api_keys (id, principal_id, hash, display, env, scopes, allow_ips, status, "
                       "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows())
    db.close()
    return store, key, time.perf_counter() - start, sample


def keys_section(tmp: Path, trials, n: int, count: int, big: int = 1_000_000) -> dict:
    from authz.authenticators import Context
    from authz.engine import DecisionEngine
    from authz.policy import load_policy
    from authz.request import CheckRequest, Headers

    directory = tmp / "keys-policy"
    write_policy(directory, {"authenticators": {"k": {"type": "api_key"}},
                             "routes": [{"id": "k", "match": {"paths": ["/v1/**"]},
                                         "require": {"use": "k", "scopes": ["orders:read"]}}]})
    measures, created, sizes = {}, {}, {}
    for total in (1000, big):
        label = f"{total:,} keys"
        store, key, created[label], sample = key_store(tmp / f"keys-{total}.db", total)
        sizes[label] = (tmp / f"keys-{total}.db").stat().st_size
        engine = DecisionEngine(load_policy(directory, Context(store=store)))

        def decide(engine=engine, key=key):
            return engine.decide(CheckRequest.build("GET", "/v1/orders/42", API_HOST, "http",
                                                    Headers({"X-API-Key": key})))

        assert decide().allowed
        measures[f"{label}: decide(), API key"] = (decide, n)
        rng = random.Random(total)
        rng.shuffle(sample)
        fingerprints = itertools.cycle(sample)

        def find(store=store, fingerprints=fingerprints):
            assert store.keys.find(next(fingerprints)) is not None

        measures[f"{label}: store.keys.find(), a different key each call"] = (find, n)
    deadline = time.perf_counter() + 2.0
    while time.perf_counter() < deadline:
        for func, _ in measures.values():
            func()
    return {"latency": trials(measures, count), "created": created, "sizes": sizes, "big": big}


def keys_report(out: dict, n: int, count: int) -> list[str]:
    lat, big = out["latency"], f"{out['big']:,} keys"
    ratio = lat[f"{big}: decide(), API key"][2] / lat["1,000 keys: decide(), API key"][2]
    best = lat[f"{big}: decide(), API key"][0] / lat["1,000 keys: decide(), API key"][0]
    return [
        "## 1,000,000 API keys (issue 13)", "",
        "Two stores: one key created with `Admin.keys.create` (the one presented), the others inserted in "
        "bulk (`sqlite3` `executemany`, the columns `ApiKeys.create` writes: random 256-bit fingerprints, "
        "`key_` ids, display forms) over 1,000 principals. Bulk creation took "
        + ", ".join(f"{t:.2f} s for {label} ({out['sizes'][label] / 2**20:.0f} MiB)"
                    for label, t in out["created"].items())
        + f". {count} round-robin trials of {n} calls, as the in-process table; the `find()` rows look up a "
        "different existing fingerprint each call (up to 2,000 spread over the table, shuffled).", "",
        "| case | p50 µs (best trial) | p99 µs (same trial) | p50 µs (median of trials) |", "|---|---:|---:|---:|",
        *[f"| {name} | {p50:.1f} | {p99:.1f} | {median:.1f} |" for name, (p50, p99, median) in lat.items()], "",
        f"API-key `decide()` p50, {big} over 1,000 keys: **{ratio - 1:+.0%}** (medians of trials), "
        f"{best - 1:+.0%} (best trials); target within ±10 %.", "",
    ]


# ----------------------------------------------------------------------------- 5: slow clients
class SlowClients:
    """``idle`` connections that send nothing and ``trickle`` connections that send a request
    line and then one header byte per second, to ``port``; a connection the server closes is
    opened again at once (an attacker keeps them open), counted in ``reopened``."""

    LINE = b"GET /auth-request HTTP/1.1\r\n"
    HEAD = b"Host: authz\r\nX-Slow: " + b"a" * 100_000

    def __init__(self, port: int, idle: int, trickle: int) -> None:
        self.port, self.idle, self.trickle = port, idle, trickle
        self.selector = selectors.DefaultSelector()
        self.sent: dict[socket.socket, int] = {}
        self.reopened = 0
        self.failed = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _open(self, kind: str) -> None:
        sock = socket.socket()
        try:
            sock.connect(("127.0.0.1", self.port))
            if kind == "trickle":
                sock.sendall(self.LINE)
        except OSError:
            sock.close()
            self.failed += 1
            return
        sock.setblocking(False)
        self.sent[sock] = 0 if kind == "trickle" else -1
        self.selector.register(sock, selectors.EVENT_READ, kind)

    def _close(self, sock: socket.socket) -> None:
        self.selector.unregister(sock)
        self.sent.pop(sock, None)
        sock.close()

    def __enter__(self) -> SlowClients:
        for _ in range(self.idle):
            self._open("idle")
        for _ in range(self.trickle):
            self._open("trickle")
        self.thread.start()
        return self

    def _run(self) -> None:
        next_tick = time.monotonic() + 1
        while not self.done.is_set():
            for item, _ in self.selector.select(timeout=max(0.0, next_tick - time.monotonic())):
                sock, kind = item.fileobj, item.data
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if not data:  # closed by the server (or an answer: keep reading until it closes)
                    self._close(sock)
                    self.reopened += 1
                    self._open(kind)
            if time.monotonic() >= next_tick:
                next_tick += 1
                for sock, position in list(self.sent.items()):
                    if position < 0:
                        continue
                    try:
                        sock.send(self.HEAD[position:position + 1])
                        self.sent[sock] = position + 1
                    except OSError:
                        pass  # the read side sees the close

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join(10)
        for key in list(self.selector.get_map().values()):
            self._close(key.fileobj)
        self.selector.close()


def slow_section(tmp: Path, db: Path, policy_dir: Path, target: str, headers: dict, seconds: float,
                 rounds: int, idle: int = 200, trickle: int = 200) -> dict:
    normal, attacked, reopened = [], [], []
    with ExitStack() as stack:
        authz = authz_serve(stack, tmp, authz_env(db, policy_dir), "authz-slow")
        port = nginx(stack, tmp, authz, "nginx-slow")
        url, request_headers = via_nginx(port, target, headers)
        wrk(url, request_headers, 1)
        for _ in range(rounds):
            normal.append(wrk(url, request_headers, seconds, strict=False, timeout="30s"))
            with SlowClients(authz, idle, trickle) as slow:
                time.sleep(1)
                attacked.append(wrk(url, request_headers, seconds, strict=False, timeout="30s"))
            reopened.append((slow.reopened, slow.failed))
    return {"normal": normal, "attacked": attacked, "reopened": reopened, "seconds": seconds,
            "idle": idle, "trickle": trickle}


def slow_report(out: dict) -> list[str]:
    def row(label: str, runs: list[dict]) -> str:
        return (f"| {label} | {statistics.median(r['rps'] for r in runs):.0f} | "
                f"{statistics.median(r['p50'] for r in runs):.2f} | {statistics.median(r['p99'] for r in runs):.2f} | "
                f"{max(r['max'] for r in runs):.1f} | {sum(r['non2xx'] for r in runs)} | "
                f"{sum(r['timeouts'] + r['errors'] for r in runs)} |")

    p99 = statistics.median(r["p99"] for r in out["attacked"]) / statistics.median(r["p99"] for r in out["normal"])
    return [
        "## Slow clients (issue 13)", "",
        f"`authz serve --workers {WORKERS}` behind nginx (`deploy/nginx/authz.conf`, as above); API-key "
        f"decisions through nginx with `wrk {' '.join(WRK)} -d{out['seconds']}s --timeout 30s`, alternately alone "
        f"and while {out['idle']} idle connections (connected, nothing sent) and {out['trickle']} trickling ones "
        "(a request line, then one header byte per second) are held open against authz's port — one the server "
        "closes is reopened at once (reopened: "
        + ", ".join(f"{r} per round" + (f", {f} failed to connect" if f else "") for r, f in out["reopened"])
        + f"). {len(out['normal'])} round(s), medians; the largest max.", "",
        "| load | req/s | p50 ms | p99 ms | max ms | non-2xx | socket errors + timeouts |",
        "|---|---:|---:|---:|---:|---:|---:|",
        row("decisions alone", out["normal"]),
        row(f"with {out['idle']} idle + {out['trickle']} trickling connections", out["attacked"]), "",
        f"p99 with them over p99 alone: **{p99:.2f}x** (target ≤ 2x).", "",
    ]
