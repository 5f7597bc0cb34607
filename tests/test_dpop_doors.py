"""DPoP (RFC 9449) through the real doors, proofs made here with PyJWT.

Real nginx (``deploy/nginx/authz.conf``) and real Caddy (``deploy/caddy/Caddyfile``) in
front of authz under gunicorn, each with an upstream that echoes what it received; the
Envoy HTTP check (``/ext-authz``) and Traefik's forwardAuth asked exactly as those
proxies ask, their answers relayed as the shipped ``envoy-http.yaml`` / ``dynamic.yaml``
say; the Envoy gRPC check through a real channel to ``authz grpc``.

For every door the client's URL has a non-default port and a percent-encoded path, and
its proof's ``htu`` is that URL as the client used it: authz must rebuild scheme, host,
port and path from what the door tells it. Then: a proof for another port, path or
method is refused, a proof is good once, and on a route with ``"dpop_nonce":
"required"`` the first proof is answered 401 ``use_dpop_nonce`` with a ``DPoP-Nonce``
that reaches the client, and the retry with that nonce is allowed (the upstream sees
``X-Auth-Jkt``, never the nonce)."""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import jwt
import pytest
import requests
import yaml
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2

from authz.admin.signing_keys import SigningKeyAdmin
from authz.authenticators import dpop
from tests.conftest import (
    ROOT,
    Server,
)
from tests.doors import door_stack
from tests.idp import AUDIENCE, ISSUER, b64, ec_key, mint, public_jwk, public_pem, rsa_key

pytestmark = pytest.mark.both_stores

IDP, CLIENT = rsa_key(), ec_key()
JWK = public_jwk(CLIENT, None, "ES256")
JKT = dpop.thumbprint(JWK)
TOKEN = mint(IDP, kid=None, cnf={"jkt": JKT})
POLICY = {"authenticators": {"payments_jwt": {"type": "jwt", "issuer": ISSUER, "audience": AUDIENCE,
                                              "algorithms": ["RS256"], "public_key_file": "idp.pem"}},
          "routes": [{"id": "payments", "match": {"paths": ["/v1/payments/**"]},
                      "require": {"use": "payments_jwt", "dpop": "required"}},
                     {"id": "nonced", "match": {"paths": ["/v1/nonced/**"]},
                      "require": {"use": "payments_jwt", "dpop": "required", "dpop_nonce": "required"}}]}
# A path a client percent-encodes (a space and an "é"), and a query that htu leaves out.
PATH = "/v1/payments/caf%C3%A9%20au%20lait"
NONCED = "/v1/nonced/caf%C3%A9"
QUERY = "?page=2"
# The port the client used where authz is told it rather than nginx's or Caddy's own.
PROXY_PORT = 8443


def ext_authz(name: str) -> dict:
    config = yaml.safe_load((ROOT / "deploy" / "envoy" / name).read_text())
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return next(f for f in manager["http_filters"] if f["name"] == "envoy.filters.http.ext_authz")["typed_config"]


def _patterns(section: dict, name: str) -> list[dict]:
    return section.get(name, {}).get("patterns", [])


def _matches(patterns: list[dict], header: str) -> bool:
    header = header.lower()
    return any(header == p.get("exact") or header.startswith(p.get("prefix", "\0")) for p in patterns)


ENVOY_HTTP = ext_authz("envoy-http.yaml")["http_service"]
TRAEFIK = yaml.safe_load((ROOT / "deploy" / "traefik" / "dynamic.yaml").read_text())["http"]["middlewares"]["authz"][
    "forwardAuth"]


@dataclass
class Reply:
    """What the client got back, and what the upstream received (allows only)."""

    status: int
    headers: dict[str, str]  # the client's response headers, names lower-case
    upstream: dict[str, str] = field(default_factory=dict)  # request headers the API saw, lower-case

    @property
    def challenge(self) -> str:
        return self.headers.get("www-authenticate", "")


@pytest.fixture(scope="module")
def stack(tmp_path_factory, new_store):
    def signing_key(store) -> dict:
        SigningKeyAdmin(store).rotate(60)  # nonces are derived from it
        return {}

    with door_stack(tmp_path_factory, new_store, "dpop-doors", {"dpop.json": POLICY, "idp.pem": public_pem(IDP)},
                    echo={"X-Seen-Jkt": "X-Auth-Jkt", "X-Seen-Nonce": "DPoP-Nonce"}, prepare=signing_key) as started:
        yield started


# -- the doors: (the URL the client used, how its request reaches authz and comes back) ----


def _through_proxy(server: Server):
    """nginx and Caddy on their own (non-default) port, as a client names it."""
    authority = f"api.example.com:{server.port}"

    def send(method: str, path: str, headers: dict) -> Reply:
        r = requests.request(method, server.url + path, headers={"Host": authority, **headers}, timeout=5)
        seen = {"x-auth-jkt": r.headers.get("X-Seen-Jkt", ""), "dpop-nonce": r.headers.get("X-Seen-Nonce", "")}
        return Reply(r.status_code, {k.lower(): v for k, v in r.headers.items()}, seen if r.status_code == 200 else {})

    return f"http://{authority}", send


def via_nginx(stack):
    return _through_proxy(stack["nginx"])


def via_caddy(stack):
    return _through_proxy(stack["caddy"])


def via_envoy_http(stack):
    """Envoy's check: the client's method, path_prefix + :path, the client's Host (its
    port included) and x-forwarded-proto (Envoy sets it); the answer relayed as
    envoy-http.yaml's authorization_response says."""
    response = ENVOY_HTTP["authorization_response"]
    passes = {p["exact"] for p in _patterns(ENVOY_HTTP["authorization_request"], "allowed_headers")}

    def send(method: str, path: str, headers: dict) -> Reply:
        sent = {k: v for k, v in headers.items() if k.lower() in passes}
        r = requests.request(method, stack["authz"].url + ENVOY_HTTP["path_prefix"] + path, timeout=5,
                             headers={"Host": f"api.example.com:{PROXY_PORT}", "X-Forwarded-Proto": "https",
                                      "Content-Length": "0", **sent})
        got = {k.lower(): v for k, v in r.headers.items()}
        if r.status_code != 200:
            return Reply(r.status_code, {k: v for k, v in got.items()
                                         if _matches(_patterns(response, "allowed_client_headers"), k)})
        return Reply(200, {k: v for k, v in got.items()
                           if _matches(_patterns(response, "allowed_client_headers_on_success"), k)},
                     {k: v for k, v in got.items() if _matches(_patterns(response, "allowed_upstream_headers"), k)})

    return f"https://api.example.com:{PROXY_PORT}", send


def via_envoy_grpc(stack):
    """Envoy's gRPC check: ``request.http`` with the client's authority (port included)."""

    def send(method: str, path: str, headers: dict) -> Reply:
        authority = f"api.example.com:{PROXY_PORT}"
        http = attribute_context_pb2.AttributeContext.HttpRequest(
            id="1", method=method, path=path, host=authority, scheme="https", protocol="HTTP/1.1",
            headers={":method": method, ":path": path, ":authority": authority, ":scheme": "https",
                     **{k.lower(): v for k, v in headers.items()}})
        attributes = attribute_context_pb2.AttributeContext(
            source=attribute_context_pb2.AttributeContext.Peer(
                address={"socket_address": {"address": "203.0.113.7", "port_value": 50000}}),
            request=attribute_context_pb2.AttributeContext.Request(http=http))
        answer = stack["grpc"].Check(external_auth_pb2.CheckRequest(attributes=attributes), timeout=5)
        if answer.status.code != 0:
            return Reply(answer.denied_response.status.code,
                         {h.header.key: h.header.value for h in answer.denied_response.headers})
        return Reply(200, {h.header.key: h.header.value for h in answer.ok_response.response_headers_to_add},
                     {h.header.key: h.header.value for h in answer.ok_response.headers})

    return f"https://api.example.com:{PROXY_PORT}", send


def via_traefik(stack):
    """Traefik's forwardAuth: a GET with X-Forwarded-* (the Host as the client sent it);
    a deny relayed as authz answered it, an allow's authResponseHeaders to the API."""
    passes = {h.lower() for h in TRAEFIK["authRequestHeaders"]}
    to_api = {h.lower() for h in TRAEFIK["authResponseHeaders"]}

    def send(method: str, path: str, headers: dict) -> Reply:
        sent = {k: v for k, v in headers.items() if k.lower() in passes}
        sent |= {"X-Forwarded-Method": method, "X-Forwarded-Proto": "https", "X-Forwarded-Uri": path,
                 "X-Forwarded-Host": f"api.example.com:{PROXY_PORT}", "X-Forwarded-For": "203.0.113.7"}
        r = requests.get(stack["authz"].url + "/forward-auth", headers=sent, timeout=5)
        got = {k.lower(): v for k, v in r.headers.items()}
        if r.status_code != 200:
            return Reply(r.status_code, got)
        return Reply(200, {}, {k: v for k, v in got.items() if k in to_api})

    return f"https://api.example.com:{PROXY_PORT}", send


DOORS = {"nginx": via_nginx, "caddy": via_caddy, "envoy-http": via_envoy_http, "envoy-grpc": via_envoy_grpc,
         "traefik": via_traefik}
# Where the door has no way to hand an allow's nonce to the client (deploy/traefik/dynamic.yaml).
NO_NONCE_ON_ALLOW = {"traefik"}


def proof(htu: str, htm: str = "GET", nonce: str | None = None) -> str:
    """A DPoP proof as an independent client makes it (RFC 9449 §4.2), with PyJWT."""
    claims = {"jti": secrets.token_urlsafe(16), "htm": htm, "htu": htu, "iat": int(time.time()),
              "ath": b64(hashlib.sha256(TOKEN.encode()).digest())}
    if nonce is not None:
        claims["nonce"] = nonce
    return jwt.encode(claims, CLIENT, algorithm="ES256", headers={"typ": "dpop+jwt", "jwk": JWK})


def dpop_headers(made: str) -> dict:
    return {"Authorization": f"DPoP {TOKEN}", "DPoP": made}


@pytest.fixture(params=list(DOORS))
def door(request, stack):
    return DOORS[request.param](stack)


def test_an_allow_with_the_url_the_client_used(door):
    origin, send = door
    reply = send("GET", PATH + QUERY, dpop_headers(proof(origin + PATH)))
    assert reply.status == 200, reply.headers
    assert reply.upstream["x-auth-jkt"] == JKT
    assert not reply.upstream.get("dpop-nonce")  # no nonce on this route, and never one for the API
    assert "dpop-nonce" not in reply.headers


def test_the_url_is_compared_as_the_client_wrote_it_normalised(door):
    """Another spelling of the same URL (case, default-port-less scheme aside, the
    path's unreserved characters encoded or not) is the same htu."""
    origin, send = door
    scheme, authority = origin.split("://")
    htu = f"{scheme.upper()}://{authority.upper()}{PATH.lower()}"  # %c3%a9: the same octets
    assert send("GET", PATH, dpop_headers(proof(htu))).status == 200


@pytest.mark.parametrize("wrong", ["default-port", "other-path", "decoded-path", "other-scheme", "method"])
def test_a_proof_for_another_url_or_method_is_refused(door, wrong):
    origin, send = door
    scheme, authority = origin.split("://")
    host = authority.rsplit(":", 1)[0]
    htu, htm = {
        "default-port": (f"{scheme}://{host}{PATH}", "GET"),
        "other-path": (origin + "/v1/payments/other", "GET"),
        "decoded-path": (origin + "/v1/payments/café au lait".replace(" ", "+"), "GET"),
        "other-scheme": (f"{'http' if scheme == 'https' else 'https'}://{authority}{PATH}", "GET"),
        "method": (origin + PATH, "POST"),
    }[wrong]
    reply = send("GET", PATH, dpop_headers(proof(htu, htm)))
    assert reply.status == 401
    assert reply.challenge.startswith("DPoP ") and 'error="invalid_dpop_proof"' in reply.challenge
    assert ("(htm)" if wrong == "method" else "(htu)") in reply.challenge


def test_a_proof_is_good_once(door):
    origin, send = door
    headers = dpop_headers(proof(origin + PATH))
    assert send("GET", PATH, headers).status == 200
    again = send("GET", PATH, headers)
    assert again.status == 401 and "replayed" in again.challenge
    assert send("GET", PATH, dpop_headers(proof(origin + PATH))).status == 200


def test_the_nonce_dance(door, request):
    origin, send = door
    first = send("GET", NONCED + QUERY, dpop_headers(proof(origin + NONCED)))
    assert first.status == 401
    assert first.challenge.startswith("DPoP ") and 'error="use_dpop_nonce"' in first.challenge
    nonce = first.headers["dpop-nonce"]
    retry = send("GET", NONCED + QUERY, dpop_headers(proof(origin + NONCED, nonce=nonce)))
    assert retry.status == 200, retry.headers
    assert retry.upstream["x-auth-jkt"] == JKT
    assert not retry.upstream.get("dpop-nonce")  # the nonce is the client's, not the API's
    if request.node.callspec.params["door"] not in NO_NONCE_ON_ALLOW:
        assert retry.headers["dpop-nonce"] == nonce  # the same slot: the same nonce, for the next proof
    forged = nonce[:-2] + ("AA" if not nonce.endswith("AA") else "BB")
    refused = send("GET", NONCED, dpop_headers(proof(origin + NONCED, nonce=forged)))
    assert refused.status == 401 and 'error="use_dpop_nonce"' in refused.challenge
    assert refused.headers["dpop-nonce"] == nonce


class Loopback(requests.Session):
    """A client session for ``http://api.example.com:<port>/…`` that reaches the door on
    loopback (the URL, hence the proof's htu, stays the client's), counting requests."""

    def __init__(self, port: int) -> None:
        super().__init__()
        self.port, self.sent = port, 0

    def request(self, method, url, **kwargs):
        self.sent += 1
        split = urlsplit(url)
        assert split.netloc == f"api.example.com:{self.port}"
        headers = {**kwargs.pop("headers", {}), "Host": split.netloc}
        return super().request(method, url.replace(split.netloc, f"127.0.0.1:{self.port}", 1), headers=headers,
                               timeout=5, **kwargs)


def test_the_readme_client_does_the_nonce_dance_through_nginx(stack):
    """The README's Python block, run as written, against the nonce route behind the
    shipped nginx: its first request is retried once with the nonce, the next one is
    made with the nonce it kept and needs no retry."""
    text = (ROOT / "README.md").read_text().split("## DPoP: tokens bound to the client's key", 1)[1]
    namespace: dict = {}
    exec(re.search(r"```python\n(.*?)```", text, re.S).group(1), namespace)  # noqa: S102 — our own README
    token = mint(IDP, kid=None, cnf={"jkt": dpop.thumbprint(namespace["public_jwk"])})
    session = Loopback(stack["nginx"].port)
    url = f"http://api.example.com:{session.port}{NONCED}{QUERY}"
    response, nonce = namespace["dpop_request"](session, "GET", url, token)
    assert (response.status_code, session.sent) == (200, 2)
    assert nonce and response.headers["DPoP-Nonce"] == nonce
    response, again = namespace["dpop_request"](session, "GET", url, token, nonce)
    assert (response.status_code, session.sent, again) == (200, 3, nonce)
