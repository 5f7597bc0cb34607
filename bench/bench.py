"""Decision benchmarks: in-process latency and end-to-end throughput through gunicorn.

    .venv/bin/python bench/bench.py            # writes bench/RESULTS.md
    .venv/bin/python bench/bench.py --quick    # fewer iterations, prints only

In-process: ``DecisionEngine.decide(CheckRequest.build(...))`` per call — the adapter's
parse of method, target and headers, route match, authenticator, verdict — timed one
call at a time with ``perf_counter_ns`` after a warm-up. The machine is a shared VM
whose neighbours shift a p50 by ±50 % from one second to the next, so each case runs
as several trials: the table gives the best trial's p50/p99 (as ``timeit`` takes the
minimum: interference only ever adds time) and the median of the trials' p50. A
second row per route times a whole WSGI request through the app (no network).

End-to-end: gunicorn (same settings for both) serving authz's ``/auth-request`` and a
no-op Flask endpoint, loaded with ``wrk`` on loopback for a fixed time; the ratio is
authz's requests per second over the no-op's. Runs alternate and the median counts.

Issue 13's numbers (``bench/serving.py``): through real nginx and directly against
``authz serve`` (granian), 10,000 routes, 1,000,000 API keys, slow clients. A section
runs alone with ``--only`` (repeatable), printing only:

    .venv/bin/python bench/bench.py --quick --only serving   # in-process, usage, gunicorn, serving, routes, keys, slow

``--only usage`` runs the in-process table's pair for issue 15 alone: a whole API-key
request with usage tracking on and off.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import itertools
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import jwt as pyjwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from http_message_signatures import HTTPMessageSigner, MappingKeyResolver
from http_message_signatures import algorithms as signature_algorithms

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from authz.adapters import client_certs  # noqa: E402
from authz.admin import Admin  # noqa: E402
from authz.app import create_app  # noqa: E402
from authz.authenticators import Context, dpop  # noqa: E402
from authz.config import Settings  # noqa: E402
from authz.credentials import request_signing  # noqa: E402
from authz.credentials.x509 import thumbprint  # noqa: E402
from authz.engine import DecisionEngine  # noqa: E402
from authz.policy import load_policy  # noqa: E402
from authz.request import BadRequest, CheckRequest, Headers  # noqa: E402
from authz.store import Store, open_store  # noqa: E402
from tests.pki import Pki, issue  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serving  # noqa: E402

BIN = Path(sys.executable).parent
ISSUER, AUDIENCE = "https://idp.example.com", "https://api.example.com"
JWT = {"type": "jwt", "issuer": ISSUER, "audience": AUDIENCE}
POLICY = {
    "authenticators": {"partner_key": {"type": "api_key"}, "staff": {"type": "basic"},
                       "rs_jwt": {**JWT, "algorithms": ["RS256"], "jwks_file": "keys/rs.jwks.json"},
                       "es_jwt": {**JWT, "algorithms": ["ES256"], "jwks_file": "keys/es.jwks.json"},
                       # Proofs are made before the trials run: the longest age RFC 9449 lets us allow.
                       "dpop_jwt": {**JWT, "algorithms": ["RS256"], "jwks_file": "keys/rs.jwks.json",
                                    "dpop_max_age": 600},
                       # RFC 9421: signatures are made before the trials run, as DPoP proofs are.
                       "signed_key": {"type": "api_key", "signatures": "required", "signature_max_age": 600},
                       "mesh": {"type": "mtls", "ca_file": "keys/mesh-ca.pem", "cert_sources": ["nginx"],
                                "intermediates_file": "keys/mesh-intermediates.pem"}},
    "routes": [
        {"id": "keys", "match": {"paths": ["/v1/orders/**"]},
         "require": {"use": "partner_key", "scopes": ["orders:read"]}},
        {"id": "basic", "match": {"paths": ["/admin/**"]}, "require": {"use": "staff", "roles": ["admin"]}},
        {"id": "rs256", "match": {"paths": ["/rs/**"]}, "require": {"use": "rs_jwt", "scopes": ["orders:read"]}},
        {"id": "es256", "match": {"paths": ["/es/**"]}, "require": {"use": "es_jwt", "scopes": ["orders:read"]}},
        {"id": "mtls", "match": {"paths": ["/mesh/**"]},
         "require": {"use": "mesh", "principals": ["spiffe://corp/ns/payments/*"]}},
        {"id": "mtls-jwt", "match": {"paths": ["/zero-trust/**"]},
         "require": {"all": ["mesh", {"use": "rs_jwt", "bind_certificate": True}]}},
        {"id": "dpop", "match": {"paths": ["/dpop/**"]},
         "require": {"use": "dpop_jwt", "scopes": ["orders:read"], "dpop": "required"}},
        {"id": "signed", "match": {"paths": ["/signed/**"]},
         "require": {"use": "signed_key", "scopes": ["orders:read"]}},
    ],
}
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
DPOP_KEY = ec.generate_private_key(ec.SECP256R1())  # a client's DPoP key (RFC 9449)
DPOP_JWK = json.loads(pyjwt.algorithms.get_default_algorithms()["ES256"].to_jwk(DPOP_KEY.public_key()))
SIGNING_KEY = ed25519.Ed25519PrivateKey.generate()  # a client's request-signing key (RFC 9421)
SIGNED = "Signed API key (Ed25519), fresh signature"
_serial = itertools.count()
PKI = Pki()


def nginx_cert(leaf) -> dict:
    """Headers as the README's nginx mTLS block sends them ($ssl_client_escaped_cert: the leaf)."""
    return {"X-SSL-Client-Cert": quote(leaf.pem.decode(), safe=""), "X-SSL-Client-Verify": "SUCCESS"}


def token(alg: str, **extra) -> str:
    """A realistic access token (jti, scope, client_id), never seen before."""
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "client_id": "web", "scope": "orders:read",
              "iat": now, "exp": now + 3600, "jti": f"t-{next(_serial)}", **extra}
    key, kid = (RSA_KEY, "rs1") if alg == "RS256" else (EC_KEY, "ec1")
    return pyjwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


def dpop_headers(access_token: str, target: str) -> dict:
    """A DPoP-bound token with a proof never seen before, as a client sends them."""
    ath = base64.urlsafe_b64encode(hashlib.sha256(access_token.encode()).digest()).rstrip(b"=").decode()
    claims = {"jti": f"p-{next(_serial)}", "htm": "GET", "htu": f"http://api.example.com{target}",
              "iat": int(time.time()), "ath": ath}
    proof = pyjwt.encode(claims, DPOP_KEY, algorithm="ES256", headers={"typ": "dpop+jwt", "jwk": DPOP_JWK})
    return {"Authorization": f"DPoP {access_token}", "DPoP": proof}


# Issue 16's end-to-end rows: the plain bearer and key rows beside their proof-of-possession kin.
POP_CASES = ("JWT RS256, repeated token", "DPoP-bound JWT RS256, repeated token, fresh proof", "API key", SIGNED)


def mtls_door_files(leaf) -> dict[str, bytes]:
    """The files ``deploy/nginx/authz-mtls.conf`` reads from /etc/nginx/tls, and the client
    side's (the bench's front hop presents ``leaf``)."""
    server_ca = issue("Server CA", ca=True)
    server_cert = issue(serving.API_HOST, server_ca, dns=[serving.API_HOST], eku=())
    return {"server.pem": server_cert.pem, "server.key": server_cert.key_pem, "server-ca.pem": server_ca.pem,
            "mesh-ca.pem": PKI.root.pem + PKI.intermediate.pem,
            "client.pem": leaf.pem + PKI.intermediate.pem, "client.key": leaf.key_pem}


def signed_headers(key: str, key_id: str, target: str) -> dict:
    """An API key with an RFC 9421 signature never seen before (a fresh nonce), as a
    client sends them: method and target URI covered, Ed25519, the library's signer."""
    request = type("Request", (), {"method": "GET", "url": f"http://api.example.com{target}",
                                   "headers": {"X-API-Key": key}})()
    signer = HTTPMessageSigner(signature_algorithm=signature_algorithms.ED25519,
                               key_resolver=MappingKeyResolver(public_keys={}, private_keys={key_id: SIGNING_KEY}))
    signer.sign(request, key_id=key_id, nonce=f"n-{next(_serial)}", label="sig1",
                covered_component_ids=("@method", "@target-uri"))
    return request.headers


def percentile(samples: list[int], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000.0


def setup(workdir: Path) -> tuple[Store, Path, str, str]:
    store = open_store(workdir / "bench.db", last_used_interval=30)
    store.migrate()
    policy_dir = workdir / "policies"
    policy_dir.mkdir()
    (policy_dir / "bench.json").write_text(json.dumps(POLICY))
    (policy_dir / "keys").mkdir()
    algorithms = pyjwt.algorithms.get_default_algorithms()
    rs = {**json.loads(algorithms["RS256"].to_jwk(RSA_KEY.public_key())), "kid": "rs1", "alg": "RS256", "use": "sig"}
    es = {**json.loads(algorithms["ES256"].to_jwk(EC_KEY.public_key())), "kid": "ec1", "alg": "ES256", "use": "sig"}
    (policy_dir / "keys" / "rs.jwks.json").write_text(json.dumps({"keys": [rs]}))
    (policy_dir / "keys" / "es.jwks.json").write_text(json.dumps({"keys": [es]}))
    (policy_dir / "keys" / "mesh-ca.pem").write_bytes(PKI.root.pem)
    (policy_dir / "keys" / "mesh-intermediates.pem").write_bytes(PKI.intermediate.pem)
    _, key = Admin(store).keys.create("partner-a", ["orders:read"])
    Admin(store).users.add("alice", "alice-pw", roles=["admin"])
    basic = "Basic " + base64.b64encode(b"alice:alice-pw").decode()
    return store, policy_dir, key, basic


def sample(func, n: int) -> tuple[float, float]:
    """(p50, p99) in µs of ``n`` timed calls."""
    samples = []
    for _ in range(n):
        start = time.perf_counter_ns()
        func()
        samples.append(time.perf_counter_ns() - start)
    return percentile(samples, 0.5), percentile(samples, 0.99)


def trials(measures: dict, count: int) -> dict:
    """Round-robin ``count`` trials over every case, so that a noisy spell on the host
    touches a few trials of each case rather than all trials of one; per case: (best
    trial's p50, that trial's p99, median of the trials' p50)."""
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in measures}
    for _ in range(count):
        for name, (func, n) in measures.items():
            runs[name].append(sample(func, n))
    return {name: (*min(r), statistics.median(p50 for p50, _ in r)) for name, r in runs.items()}


FIREWALL_TARGETS = {"plain path": "/v1/orders/42?expand=1", "percent-encoded": "/v1/orders/42%3Aapprove",
                    "UTF-8": "/caf%C3%A9/men%C3%BC/x", "refused (dot segment)": "/static/%2e%2e/admin"}


def describe(target: str, headers: dict) -> CheckRequest:
    """What the nginx adapter does with a request's headers."""
    parsed = Headers(headers)
    return CheckRequest.build("GET", target, "api.example.com", "http", parsed, None,
                              client_certs.from_headers(parsed))


USAGE_ON, USAGE_OFF = "API key: whole WSGI request", "API key: whole WSGI request, usage tracking off"


def in_process(store: Store, policy_dir: Path, cases: dict, n: int, count: int, n_first: int,
               usage_only: bool = False) -> dict:
    """The in-process table; ``usage_only``: only the API key's WSGI rows with usage
    tracking on (the default) and off (``AUTHZ_KEY_USAGE=off``)."""
    engine = DecisionEngine(load_policy(policy_dir, Context(store=store)))
    # The decision log on, as by default, to a file rather than this report.
    settings = Settings(db_path=store.path, policy_dir=policy_dir,
                        decision_log=str(store.path.parent / "decisions.log"))
    app = create_app(settings)
    # The same app without counting usage per key: the pair of rows shows what counting costs.
    app_off = create_app(settings.with_(key_usage=False))
    measures: dict[str, tuple] = {}
    once: set[str] = set()  # measures that spend a credential made beforehand per call: no warm-up by time
    if usage_only:
        cases = {"API key": cases["API key"]}
    for name, (target, headers) in cases.items():
        if callable(headers):  # first sight: a new credential for every call
            fresh = iter([headers() for _ in range(100 + n_first * count)])

            def decide(target=target, fresh=fresh):
                return engine.decide(describe(target, next(fresh)))

            measures[f"{name}: decide()"] = (decide, n_first)
            once.add(f"{name}: decide()")
            if name == SIGNED:  # and its whole request: the nonce's store write is in both
                measures[f"{name}: whole WSGI request"] = (fresh_wsgi(app, target, headers, n_first, count),
                                                           n_first // 2)
                once.add(f"{name}: whole WSGI request")
            continue

        def decide(target=target, headers=headers):
            return engine.decide(describe(target, headers))

        environ = wsgi_environ(target, headers)

        def wsgi(environ=environ, app=app):
            statuses = []
            for _ in app.wsgi_app(dict(environ), lambda status, headers, statuses=statuses: statuses.append(status)):
                pass
            return statuses[0]

        assert decide().allowed and wsgi().startswith("200"), name
        if usage_only:
            measures[USAGE_ON] = (wsgi, n // 2)
            measures[USAGE_OFF] = (lambda environ=environ: wsgi(environ, app_off), n // 2)
            continue
        measures[f"{name}: decide()"] = (decide, n)
        measures[f"{name}: whole WSGI request"] = (wsgi, n // 2)
        if name == "API key":
            measures[USAGE_OFF] = (lambda environ=environ: wsgi(environ, app_off), n // 2)
            # The same decision with the CheckRequest built by hand from the raw target:
            # no request-target firewall, no host or method checks. The p50 difference
            # to "decide()" is what the firewall costs on this path.
            def decide_raw(target=target, headers=headers):
                parsed = Headers(headers)
                return engine.decide(CheckRequest("GET", target, "api.example.com", "http", "", parsed, None,
                                                  client_certs.from_headers(parsed)))

            assert decide_raw().allowed
            measures[f"{name}: decide(), no firewall"] = (decide_raw, n)
    for label, target in FIREWALL_TARGETS.items() if not usage_only else ():
        def firewall(target=target):
            try:
                return CheckRequest.build("GET", target, "api.example.com")
            except BadRequest:
                return None

        measures[f"firewall alone: {label}"] = (firewall, n)
    # A fresh process runs slow for its first seconds (caches, CPU clock): warm up by time.
    deadline = time.perf_counter() + 3.0
    while time.perf_counter() < deadline:
        for name, (func, _) in measures.items():
            if name not in once:
                func()
    for name, (func, _) in measures.items():
        if name in once:
            for _ in range(99):
                func()
    return trials(measures, count)


def wsgi_environ(target: str, headers: dict) -> dict:
    """The WSGI environ of nginx's auth subrequest for ``target`` with ``headers``."""
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/auth-request", "SERVER_NAME": "authz",
               "SERVER_PORT": "8080", "wsgi.url_scheme": "http", "REMOTE_ADDR": "127.0.0.1",
               "HTTP_HOST": "api.example.com", "HTTP_X_ORIGINAL_URI": target,
               "HTTP_X_ORIGINAL_METHOD": "GET", "wsgi.input": io.BytesIO(b""),
               "wsgi.errors": sys.stderr, "SERVER_PROTOCOL": "HTTP/1.1"}
    environ.update({"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()})
    return environ


def fresh_wsgi(app, target: str, make_headers, n_first: int, count: int):
    """A whole WSGI request with new credentials each call (made beforehand), allowed."""
    fresh = iter([wsgi_environ(target, make_headers()) for _ in range(100 + n_first * count)])

    def wsgi():
        statuses = []
        for _ in app.wsgi_app(next(fresh), lambda status, headers: statuses.append(status)):
            pass
        assert statuses[0].startswith("200"), statuses[0]
        return statuses[0]

    return wsgi


def usage_line(latency: dict) -> str:
    """What counting usage per key costs a whole API-key request (target: at most 3 µs at p50)."""
    on, off = latency[USAGE_ON], latency[USAGE_OFF]
    return (f"Usage tracking on the API-key path (`{USAGE_ON}` minus `{USAGE_OFF}`, `AUTHZ_KEY_USAGE=off`): "
            f"**{on[0] - off[0]:+.1f} µs** at p50 (best trials), {on[2] - off[2]:+.1f} µs (medians); target ≤ 3 µs.")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


GUNICORN = ["--workers", "2", "--worker-class", "sync", "--backlog", "2048", "--log-level", "warning"]


def serve(app: str, env: dict, cwd: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([str(BIN / "gunicorn"), *GUNICORN, "--bind", f"127.0.0.1:{port}", app],
                            env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}/auth-request", timeout=1)
            return proc, port
        except requests.ConnectionError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"gunicorn {app} did not start")


def wrk(port: int, headers: dict, target: str, seconds: int) -> float:
    args = ["wrk", "-t1", "-c8", f"-d{seconds}s", "--latency"]
    for k, v in {"X-Original-URI": target, "X-Original-Method": "GET", **headers}.items():
        args += ["-H", f"{k}: {v}"]
    out = subprocess.run([*args, f"http://127.0.0.1:{port}/auth-request"], capture_output=True,
                         text=True, check=True, timeout=seconds + 30).stdout
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"{non2xx.group(1)} requests were not allowed:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def end_to_end(store: Store, policy_dir: Path, cases: dict, seconds: int, rounds: int) -> dict:
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: `make bench` installs it (apt-get install wrk)")
    env = {**os.environ, "AUTHZ_DB": str(store.path), "AUTHZ_POLICY_DIR": str(policy_dir),
           "AUTHZ_DECISION_LOG": str(store.path.parent / "decisions.log")}
    authz, authz_port = serve("wsgi:app", env, ROOT)
    noop, noop_port = serve("noop_app:app", env, ROOT / "bench")
    results = {}
    try:
        for name, (target, headers) in cases.items():
            ours, base = [], []
            for _ in range(rounds):
                base.append(wrk(noop_port, headers, target, seconds))
                ours.append(wrk(authz_port, headers, target, seconds))
            results[name] = (statistics.median(ours), statistics.median(base))
    finally:
        for proc in (authz, noop):
            proc.terminate()
            proc.wait(10)
    return results


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), "?")
    return (f"{os.cpu_count()} x {cpu}, {int(mem) // 1024 // 1024} GiB, Linux {platform.release()}, "
            f"Python {platform.python_version()}")


SECTIONS = ("in-process", "usage", "gunicorn", "serving", "pop", "routes", "keys", "slow")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="short run, print only")
    parser.add_argument("--only", action="append", choices=SECTIONS,
                        help="run only this section (repeatable); prints only")
    args = parser.parse_args()
    only = set(args.only or SECTIONS)
    n, count, n_first, seconds, rounds = (3000, 2, 300, 3, 1) if args.quick else (10000, 9, 1000, 10, 3)
    # Issue 13's serving rows: wrk seconds and rounds; reload and slow-client windows.
    serve_seconds, serve_rounds, window, window_rounds = (2, 1, 5, 1) if args.quick else (5, 5, 10, 3)
    started = time.time()
    sections: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        store, policy_dir, key, basic = setup(Path(tmp))
        rs_token, es_token = token("RS256"), token("ES256")
        leaf = PKI.leaf()
        bound = token("RS256", cnf={"x5t#S256": thumbprint(leaf.der)})
        dpop_bound = token("RS256", cnf={"jkt": dpop.thumbprint(DPOP_JWK)})
        signed_record, signed_key = Admin(store).keys.create(
            "partner-s", ["orders:read"], signing=request_signing.ed25519_public(SIGNING_KEY.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)))
        signed_id = signed_record.id
        cases = {"API key": ("/v1/orders/42", {"X-API-Key": key}),
                 "Basic (cached)": ("/admin/users", {"Authorization": basic}),
                 "JWT RS256, repeated token": ("/rs/x", {"Authorization": f"Bearer {rs_token}"}),
                 "JWT ES256, repeated token": ("/es/x", {"Authorization": f"Bearer {es_token}"}),
                 "JWT RS256, first sight": ("/rs/x", lambda: {"Authorization": f"Bearer {token('RS256')}"}),
                 "JWT ES256, first sight": ("/es/x", lambda: {"Authorization": f"Bearer {token('ES256')}"}),
                 "mTLS, repeated certificate": ("/mesh/x", nginx_cert(leaf)),
                 "mTLS + bound JWT, repeated": ("/zero-trust/x",
                                                {**nginx_cert(leaf), "Authorization": f"Bearer {bound}"}),
                 "mTLS, first sight": ("/mesh/x", lambda: nginx_cert(PKI.leaf())),
                 # A fresh proof per request (ES256, a store write for its jti); end to end, a wrk
                 # script sends each request its own proof (serving.each_request_script).
                 "DPoP-bound JWT RS256, repeated token, fresh proof": (
                     "/dpop/x", lambda: dpop_headers(dpop_bound, "/dpop/x")),
                 # The same for a signed API key: a fresh signature (nonce) per request.
                 SIGNED: ("/signed/x", lambda: signed_headers(signed_key, signed_id, "/signed/x"))}
        loaded = {name: case for name, case in cases.items() if not callable(case[1])}
        if "in-process" in only:
            latency = in_process(store, policy_dir, cases, n, count, n_first)
            sections += [
                "## In-process decision latency", "",
                f"{count} trials of {n} calls each after a warm-up ({n_first} for first-sight tokens, each call "
                "a token never seen before, with a jti checked against the revocation table); `decide()` "
                "includes building the CheckRequest (path normalisation, headers) as an adapter does. Best "
                "trial's p50 and p99, and the median of the trials' p50 (the VM's neighbours add noise; see "
                "bench.py).", "",
                "| case | p50 µs (best trial) | p99 µs (same trial) | p50 µs (median of trials) |",
                "|---|---:|---:|---:|",
                *[f"| {name} | {p50:.1f} | {p99:.1f} | {median:.1f} |"
                  for name, (p50, p99, median) in latency.items()], "",
                "The request-target firewall on the API-key path: `decide()` minus `decide(), no firewall` "
                f"= {latency['API key: decide()'][0] - latency['API key: decide(), no firewall'][0]:.1f} µs "
                f"(best trials), {latency['API key: decide()'][2] - latency['API key: decide(), no firewall'][2]:.1f}"
                " µs (medians); `firewall alone` rows time `CheckRequest.build` with no headers.", "",
                usage_line(latency), ""]
        elif "usage" in only:  # the pair alone, with the in-process table's trials
            latency = in_process(store, policy_dir, cases, n, count, n_first, usage_only=True)
            sections += [
                "## API key usage tracking", "",
                "| case | p50 µs (best trial) | p99 µs (same trial) | p50 µs (median of trials) |",
                "|---|---:|---:|---:|",
                *[f"| {name} | {p50:.1f} | {p99:.1f} | {median:.1f} |" for name, (p50, p99, median) in latency.items()],
                "", usage_line(latency), ""]
        if "gunicorn" in only:
            throughput = end_to_end(store, policy_dir, loaded, seconds, rounds)
            sections += [
                "## End-to-end throughput through gunicorn", "",
                f"gunicorn `{' '.join(GUNICORN)}` for both; `wrk -t1 -c8 -d{seconds}s` on loopback "
                f"(sharing the same cores); median of {rounds} alternating runs.", "",
                "| route | authz req/s | no-op Flask req/s | ratio |", "|---|---:|---:|---:|",
                *[f"| {name} | {ours:.0f} | {base:.0f} | {ours / base:.0%} |"
                  for name, (ours, base) in throughput.items()], ""]
        if "serving" in only:
            results = serving.serving(Path(tmp), store.path, policy_dir, loaded, serve_seconds, serve_rounds,
                                      mtls_door_files(leaf))
            sections += serving.serving_report(results, serve_seconds, serve_rounds)
        if "pop" in only:
            pop_cases = {name: cases[name] for name in POP_CASES}
            results = serving.pop_section(Path(tmp), store.path, policy_dir, pop_cases, serve_seconds, serve_rounds)
            sections += serving.pop_report(results, latency if "in-process" in only else {}, serve_seconds,
                                           serve_rounds)
        if "routes" in only:
            out = serving.routes_section(Path(tmp), store, key, trials, n, count, window, window_rounds)
            sections += serving.routes_report(out, n, count)
        if "keys" in only:
            out = serving.keys_section(Path(tmp), trials, n, count)
            sections += serving.keys_report(out, n, count)
        if "slow" in only:
            target, headers = loaded["API key"]
            out = serving.slow_section(Path(tmp), store.path, policy_dir, target, headers, window, window_rounds)
            sections += serving.slow_report(out)
    lines = [
        "# Benchmark results", "",
        f"Machine: {machine()}. Measured {time.strftime('%Y-%m-%d')} with `make bench` "
        f"(`bench/bench.py`, {(time.time() - started) / 60:.0f} minutes).", "",
        *sections,
    ]
    report = "\n".join(lines)
    print(report)
    if not args.quick and not args.only:
        (ROOT / "bench" / "RESULTS.md").write_text(report)


if __name__ == "__main__":
    main()
