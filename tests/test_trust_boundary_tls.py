"""The attacker's suite for issue 9, on the mTLS nginx door.

``deploy/nginx/authz-mtls.conf`` (only re-pointed: loopback ports, TLS files from a
test PKI) terminates TLS with ``ssl_verify_client optional_no_ca`` in front of authz
under gunicorn, and of a raw echo and a Flask upstream (tests/upstreams.py). A client
without a TLS certificate cannot make headers into one; a client's own identity
headers never reach the upstream; nginx's ``X-SSL-Client-Verify: NONE`` means no
certificate (absent), so a valid Basic user passes ``any: [mtls, basic]``.
"""

from __future__ import annotations

import base64
import secrets
import ssl
import time
from pathlib import Path

import pytest

from tests.conftest import Server, free_port
from tests.pki import Pki, issue
from tests.test_trust_boundary import (
    AMBIGUOUS_TARGETS,
    API,
    CERT_HEADERS,
    FAKE_TOKEN,
    SPELLINGS,
    SPIFFE,
    VERIFY_FORGERIES,
    forged_certificate_headers,
    forged_identity,
    forged_seen_by_echo,
    listing,
    make_store,
    protected_in,
    scan_logs,
    secrets_of,
    start_authz,
    trust_policy,
    verify_identity_token,
)
from tests.upstreams import (
    FlaskUpstream,
    RawEcho,
    Reply,
    build_request,
    nginx_site,
    raw_http,
    start_nginx_at,
    wait_listening,
)

pytestmark = pytest.mark.both_stores

BILLING = "spiffe://corp/ns/billing/sa/api"


def mtls_site(port: int, authz_port: int, upstream_port: int, tls_dir: Path, proxy_secret: str | None = None) -> str:
    site = nginx_site("authz-mtls.conf", 443, port, authz_port, upstream_port, tls_dir=tls_dir,
                      proxy_secret=proxy_secret)
    if "http://authz" in site and "upstream authz" not in site:  # the upstream block lives in authz.conf
        site = f"upstream authz {{ server 127.0.0.1:{authz_port}; }}\n" + site
    return site


class TlsDoor:
    def __init__(self, name: str, server: Server, tls_dir: Path, pki: Pki, tmp: Path) -> None:
        self.name, self.server, self.tls_dir, self.pki, self.tmp = name, server, tls_dir, pki, tmp

    def context(self, cert=None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.tls_dir / "server-ca.pem"))
        if cert is not None:
            certfile, keyfile = self.tmp / f"client-{id(cert)}.pem", self.tmp / f"client-{id(cert)}.key"
            certfile.write_bytes(cert.pem + self.pki.intermediate.pem)
            keyfile.write_bytes(cert.key_pem)
            context.load_cert_chain(str(certfile), str(keyfile))
        return context

    def send(self, method, target, headers=(), cert=None, host: str | None = API, sni: str = API) -> Reply:
        return raw_http(self.server.port, build_request(method, target, headers, host), tls=self.context(cert),
                        server_hostname=sni)


def make_tls_dir(tmp: Path, pki: Pki) -> Path:
    server_ca = issue("Server CA", ca=True)
    server = issue(API, server_ca, dns=[API, "localhost"], ips=["127.0.0.1"], eku=())
    tls_dir = tmp / "tls"
    tls_dir.mkdir()
    (tls_dir / "server.pem").write_bytes(server.pem)
    (tls_dir / "server.key").write_bytes(server.key_pem)
    (tls_dir / "server-ca.pem").write_bytes(server_ca.pem)
    (tls_dir / "mesh-ca.pem").write_bytes(pki.root.pem + pki.intermediate.pem)
    return tls_dir


@pytest.fixture(scope="module")
def tls(tmp_path_factory, new_store):
    tmp = tmp_path_factory.mktemp("trust-tls")
    pki = Pki()
    store, policy_dir, creds = make_store(new_store, tmp, pki, trust_policy())
    tls_dir = make_tls_dir(tmp, pki)
    echo, flask = RawEcho(), FlaskUpstream()
    started: list[Server] = []
    try:
        authz = start_authz(tmp, store, policy_dir)
        started.append(authz)
        authz.wait()
        doors = {}
        for name, upstream in (("raw", echo.port), ("flask", flask.port)):
            port = free_port()
            server = start_nginx_at(tmp / f"nginx-mtls-{name}", mtls_site(port, authz.port, upstream, tls_dir), port)
            started.append(server)
            doors[name] = TlsDoor(f"nginx-mtls->{name}", server, tls_dir, pki, tmp)
        wait_listening(started[1:])
        yield {"tmp": tmp, "store": store, "policy_dir": policy_dir, "creds": creds, "pki": pki, "authz": authz,
               "echo": echo, "flask": flask, "doors": doors, "tls_dir": tls_dir,
               "payments": pki.leaf(SPIFFE), "billing": pki.leaf(BILLING)}
    finally:
        for server in reversed(started):
            server.stop()
        echo.stop()
        flask.stop()
        new_store.discard(store)


def through_echo(tls, method, target, headers=(), cert=None):
    echo = tls["echo"]
    mark = echo.mark()
    reply = tls["doors"]["raw"].send(method, target, headers, cert)
    return reply, echo.since(mark)


# --------------------------------------------------------------------------- controls
def test_real_certificate_is_the_service(tls):
    reply, records = through_echo(tls, "GET", "/mesh/orders", cert=tls["payments"])
    assert reply.status == 200 and len(records) == 1, (reply.status, reply.text[:200])
    assert [v for v in records[0].values("X-Auth-Service") if v] == [SPIFFE]
    reply, records = through_echo(tls, "GET", "/mesh/orders")
    assert reply.status == 401 and not records


# --------------------------------------------------------------------------- 1. certificates
@pytest.mark.parametrize("verify", list(VERIFY_FORGERIES))
@pytest.mark.parametrize("header", CERT_HEADERS)
def test_forged_certificate_header_without_a_tls_certificate(tls, header, verify):
    forged = forged_certificate_headers(tls["pki"])[header] + VERIFY_FORGERIES[verify]
    failures = {}
    for path in ("/mesh/orders", "/svc/orders"):
        reply, records = through_echo(tls, "GET", path, forged)
        if reply.status == 200 or records or reply.status >= 500:
            failures[path] = (reply.status, len(records))
    assert not failures, listing(failures)


@pytest.mark.parametrize("header", CERT_HEADERS)
def test_forged_certificate_header_beside_a_real_one(tls, header):
    """billing presents its own certificate and copies payments' into a header: it is billing."""
    forged = forged_certificate_headers(tls["pki"])[header] + [("X-SSL-Client-Verify", "SUCCESS")]
    failures = {}
    for path in ("/mesh/orders", "/svc/orders"):
        reply, records = through_echo(tls, "GET", path, forged, cert=tls["billing"])
        services = [v for rec in records for v in rec.values("X-Auth-Service") if v]
        if reply.status != 200 or services != [BILLING]:
            failures[path] = (reply.status, services)
    assert not failures, listing(failures)


# --------------------------------------------------------------------------- 2. identity headers
@pytest.mark.parametrize("route", ["mtls", "key", "anonymous"])
@pytest.mark.parametrize("spelling", list(SPELLINGS))
def test_client_identity_headers_never_reach_the_upstream(tls, spelling, route):
    creds = tls["creds"]
    path, extra, cert, principal = {
        "mtls": ("/mesh/orders", [], tls["payments"], SPIFFE),
        "key": ("/v1/orders/42", [("X-API-Key", creds["rw"])], None, "partner-rw"),
        "anonymous": ("/static/x", [], None, None),
    }[route]
    echo, flask = tls["echo"], tls["flask"]
    failures = {}
    for name, door in tls["doors"].items():
        marks = echo.mark(), flask.mark()
        r = door.send("GET", path, forged_identity(spelling) + extra, cert)
        if r.status != 200:
            failures[door.name] = ("status", r.status)
        elif name == "raw":
            records = echo.since(marks[0])
            principals = [v for rec in records for v in rec.values("X-Auth-Principal") if v]
            if forged_seen_by_echo(records) or principals != ([principal] if principal else []):
                failures[door.name] = (forged_seen_by_echo(records), principals)
        else:
            records = flask.since(marks[1])
            forged = [(k, v) for rec in records for k, v in rec.identity.items() if "FORGED" in v]
            seen = [rec.identity.get("HTTP_X_AUTH_PRINCIPAL") or None for rec in records]
            if forged or seen != [principal]:
                failures[door.name] = (forged, seen)
    assert not failures, listing(failures)


def test_identity_token_reaches_the_upstream_and_verifies(tls):
    reply, records = through_echo(tls, "GET", "/signed/x", [("X-API-Key", tls["creds"]["rw"]),
                                                            ("X-Auth-Token", FAKE_TOKEN)])
    assert reply.status == 200 and len(records) == 1
    tokens = [v for v in records[0].values("X-Auth-Token") if v]
    assert FAKE_TOKEN not in tokens and len(tokens) == 1, records[0].identity_lines()
    assert verify_identity_token(tls["authz"], tokens[0])["sub"] == "partner-rw"


# --------------------------------------------------------------------------- 3./4. paths, hosts
@pytest.mark.parametrize("target", AMBIGUOUS_TARGETS)
def test_ambiguous_targets_are_refused(tls, target):
    flask = tls["flask"]
    mark = flask.mark()
    reply = tls["doors"]["flask"].send("GET", target, cert=tls["payments"])
    assert not protected_in(reply) and not flask.since(mark), (reply.status, reply.text[:100])
    assert reply.status in (400, 403)


@pytest.mark.parametrize(("host", "sni"), [("docs.example.com", API), (None, API), ("docs.example.com", "localhost")])
def test_unknown_hosts_are_refused(tls, host, sni):
    """The mTLS block names its server; the default server refuses other names (421, or
    no handshake at all for an unknown SNI)."""
    flask = tls["flask"]
    mark = flask.mark()
    try:
        reply = tls["doors"]["flask"].send("GET", "/admin/x", host=host, sni=sni)
    except (ssl.SSLError, ConnectionError):
        reply = None  # handshake refused: ssl_reject_handshake
    assert not flask.since(mark)
    if reply is not None:
        # no Host at all: nginx's own 400 (HTTP/1.1 needs one), else the SNI's server decides (401)
        expected = (421,) if host else (400, 401, 421)
        assert reply.status in expected, (reply.status, reply.text[:100])


# --------------------------------------------------------------------------- 7. NONE is absent
def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_no_certificate_is_absent_so_basic_passes(tls):
    """``X-SSL-Client-Verify: NONE`` is no certificate: ``any: [mtls, basic]`` moves on to Basic."""
    reply, records = through_echo(tls, "GET", "/open/x", [("Authorization", tls["creds"]["alice"])])
    assert reply.status == 200 and len(records) == 1, (reply.status, reply.text[:100])
    assert [v for v in records[0].values("X-Auth-User") if v] == ["alice"]


def test_basic_controls_on_the_mtls_door(tls):
    # a wrong password is invalid: 401
    reply, records = through_echo(tls, "GET", "/open/x", [("Authorization", basic("alice", "wrong"))])
    assert reply.status == 401 and not records
    # a real certificate alone passes
    reply, records = through_echo(tls, "GET", "/open/x", cert=tls["payments"])
    assert reply.status == 200 and [v for v in records[0].values("X-Auth-Service") if v] == [SPIFFE]
    # a certificate nginx could not verify (another CA: FAILED) is invalid, not absent: Basic does not rescue it
    other = issue("client", tls["pki"].other_root, uris=[SPIFFE])
    reply, records = through_echo(tls, "GET", "/open/x", [("Authorization", tls["creds"]["alice"])], cert=other)
    assert reply.status == 401 and not records


# --------------------------------------------------------------------------- 8. proxy secret
@pytest.fixture(scope="module")
def secret_door(tls):
    tmp = tls["tmp"] / "secret"
    tmp.mkdir()
    secret = "ps_" + secrets.token_urlsafe(24)
    started: list[Server] = []
    try:
        authz = start_authz(tmp, tls["store"], tls["policy_dir"], AUTHZ_PROXY_SECRET=secret)
        started.append(authz)
        authz.wait()
        port = free_port()
        server = start_nginx_at(tmp / "nginx", mtls_site(port, authz.port, tls["echo"].port, tls["tls_dir"],
                                                         proxy_secret=secret), port)
        started.append(server)
        wait_listening([server])
        yield {"secret": secret, "door": TlsDoor("nginx-mtls-secret", server, tls["tls_dir"], tls["pki"], tmp)}
    finally:
        for server in reversed(started):
            server.stop()


def test_proxy_secret_through_the_mtls_door(tls, secret_door):
    echo = tls["echo"]
    for headers, cert in (([("X-API-Key", tls["creds"]["rw"])], None), ([], tls["payments"])):
        path = "/v1/orders/42" if headers else "/mesh/orders"
        mark = echo.mark()
        reply = secret_door["door"].send("GET", path, headers, cert)
        records = echo.since(mark)
        assert reply.status == 200 and len(records) == 1, (path, reply.status)
        raw = b"\n".join(k + b": " + v for k, v in records[0].header_lines)
        assert secret_door["secret"].encode() not in raw


# --------------------------------------------------------------------------- 9. logs
def test_no_secret_in_any_log(tls, request):
    try:
        secret = request.getfixturevalue("secret_door")
    except (AssertionError, RuntimeError):
        secret = {"secret": "ps_never_used_" + secrets.token_urlsafe(8), "door": None}
    creds = tls["creds"]
    doors = list(tls["doors"].values()) + ([secret["door"]] if secret["door"] else [])
    wrong = "wrong-" + secrets.token_urlsafe(10)
    for door in doors:
        door.send("GET", f"/v1/orders/42?api_key={creds['rw']}")
        door.send("GET", f"/legacy/report?api_key={creds['rw']}")
        door.send("GET", "/open/x", [("Authorization", creds["alice"])])
        door.send("GET", "/open/x", [("Authorization", basic("alice", wrong))])
        door.send("GET", f"/admin/x?api_key={creds['admin']}", [("X-API-Key", creds["admin"])])
    time.sleep(1.2)
    files, leaks = scan_logs(tls["tmp"], secrets_of(tls, {"proxy secret": secret["secret"], "wrong password": wrong}))
    names = {p.name for p in files}
    assert "decisions.log" in names and "nginx-error.log" in names
    assert not leaks, leaks
