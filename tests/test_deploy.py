"""deploy/: every configuration is checked — run by a real server where one exists
here (nginx, Caddy: see also test_nginx*.py and test_front_doors.py), parsed and held
to the contract (paths, header names) where none does (Envoy, Traefik, ingress-nginx,
systemd)."""

import configparser
import itertools
import os
import re
import subprocess

import pytest
import yaml

from tests.conftest import BIN, ROOT, caddy_binary

pytestmark = pytest.mark.both_stores

DEPLOY = ROOT / "deploy"
CONTRACT_HEADERS = ["X-Auth-Principal", "X-Auth-User", "X-Auth-Client", "X-Auth-Service", "X-Auth-Methods",
                    "X-Auth-Scopes", "X-Auth-Route", "X-Auth-Token", "X-Auth-Jkt"]


def test_readme_nginx_blocks_are_the_deploy_files():
    blocks = re.findall(r"```nginx\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert (DEPLOY / "nginx" / "authz.conf").read_text() in blocks
    assert (DEPLOY / "nginx" / "authz-mtls.conf").read_text() in blocks


# Headers a client must never choose (docs/proxies.md, "Trust boundary", rule 1: every
# header authz believes is set or cleared by the door itself).
CERT_HEADERS = ["x-ssl-client-cert", "x-ssl-client-verify", "ssl-client-cert", "ssl-client-verify",
                "x-forwarded-tls-client-cert", "client-cert", "client-cert-chain"]
ORIGINAL_HEADERS = ["x-original-uri", "x-original-url", "x-original-method", "x-original-host", "x-real-ip"]
OVERRIDE_HEADERS = ["x-http-method-override", "x-http-method", "x-method-override"]
# Headers that make a framework route, or name the host, otherwise than the door did.
ROUTING_HEADERS = ["x-rewrite-url", "x-forwarded-prefix", "forwarded"]


def underscore_spellings(name: str) -> set[str]:
    parts = name.split("-")
    found = set()
    for seps in itertools.product("-_", repeat=len(parts) - 1):
        if "_" in seps:
            found.add(parts[0] + "".join(sep + part for sep, part in zip(seps, parts[1:], strict=True)))
    return found


def envoy(name: str) -> tuple[dict, dict, list[str]]:
    config = yaml.safe_load((DEPLOY / "envoy" / name).read_text())
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    filters = [f["name"] for f in hcm["http_filters"]]
    ext = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_authz")["typed_config"]
    return hcm, ext, filters


def envoy_removes(hcm: dict) -> set[str]:
    mutation = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.header_mutation")
    return {m["remove"] for m in mutation["typed_config"]["mutations"]["request_mutations"]}


def test_envoy_http():
    hcm, ext, _ = envoy("envoy-http.yaml")
    assert ext["failure_mode_allow"] is False and ext["transport_api_version"] == "V3"
    http = ext["http_service"]
    assert http["path_prefix"] == "/ext-authz"
    allowed = {p["exact"] for p in http["authorization_request"]["allowed_headers"]["patterns"]}
    assert {"authorization", "x-api-key", "x-forwarded-client-cert", "x-forwarded-for"} <= allowed
    # authz must see a method override to hold the request to it
    assert set(OVERRIDE_HEADERS) <= allowed
    assert not allowed & set(CERT_HEADERS + ORIGINAL_HEADERS)
    added = {h["key"]: h["value"] for h in http["authorization_request"]["headers_to_add"]}
    assert "AUTHZ_PROXY_SECRET" in added["x-authz-proxy-secret"]
    upstream = http["authorization_response"]["allowed_upstream_headers"]["patterns"]
    assert {"prefix": "x-auth-"} in upstream
    client = {p["exact"] for p in http["authorization_response"]["allowed_client_headers"]["patterns"]}
    assert {"www-authenticate", "x-auth-reason", "dpop-nonce", "accept-signature"} <= client
    # RFC 9449 §9: a server nonce reaches the client on an allow too, and never the API
    # (Accept-Signature, RFC 9421 §5.1, is only ever on a 401)
    on_success = http["authorization_response"]["allowed_client_headers_on_success"]["patterns"]
    assert on_success == [{"exact": "dpop-nonce"}]
    # XFCC: only what this Envoy sets reaches authz (SANITIZE_SET drops a client's own)
    assert hcm["forward_client_cert_details"] == "SANITIZE_SET"


def test_envoy_grpc():
    hcm, ext, _ = envoy("envoy-grpc.yaml")
    assert ext["grpc_service"]["envoy_grpc"]["cluster_name"] == "authz_grpc"
    assert ext["include_peer_certificate"] is True and ext["failure_mode_allow"] is False
    metadata = {m["key"]: m["value"] for m in ext["grpc_service"]["initial_metadata"]}
    assert "AUTHZ_PROXY_SECRET" in metadata["x-authz-proxy-secret"]
    assert hcm["forward_client_cert_details"] in ("SANITIZE", "SANITIZE_SET")
    config = yaml.safe_load((DEPLOY / "envoy" / "envoy-grpc.yaml").read_text())
    cluster = next(c for c in config["static_resources"]["clusters"] if c["name"] == "authz_grpc")
    assert "http2_protocol_options" in str(cluster)
    assert "--bind 127.0.0.1:9191" in (DEPLOY / "systemd" / "authz-grpc.service").read_text()
    assert "port_value: 9191" in (DEPLOY / "envoy" / "envoy-grpc.yaml").read_text()


@pytest.mark.parametrize("name", ["envoy-http.yaml", "envoy-grpc.yaml"])
def test_envoy_clears_what_a_client_must_not_choose(name):
    hcm, _, filters = envoy(name)
    # the gRPC check sends every header: they must be gone before ext_authz runs
    assert filters.index("envoy.filters.http.header_mutation") < filters.index("envoy.filters.http.ext_authz")
    removed = envoy_removes(hcm)
    assert {h.lower() for h in CONTRACT_HEADERS} <= removed
    assert set(CERT_HEADERS + ORIGINAL_HEADERS + ROUTING_HEADERS + ["x-authz-proxy-secret"]) <= removed
    assert hcm["common_http_protocol_options"]["headers_with_underscores_action"] == "REJECT_REQUEST"
    # authz under granian sees PATH_INFO decoded, not the raw target: Envoy must refuse %2F
    assert hcm["normalize_path"] is True and hcm["merge_slashes"] is True
    assert hcm["path_with_escaped_slashes_action"] == "REJECT_REQUEST"


def test_traefik():
    config = yaml.safe_load((DEPLOY / "traefik" / "dynamic.yaml").read_text())
    router = config["http"]["routers"]["api"]
    middlewares = config["http"]["middlewares"]
    chain = router["middlewares"]
    kinds = [next(iter(middlewares[name])) for name in chain]
    # the certificate header must be cleared, then set by Traefik, before authz is asked
    assert kinds.index("passTLSClientCert") < kinds.index("forwardAuth")
    clear = middlewares[chain[0]]["headers"]["customRequestHeaders"]
    assert all(value == "" for value in clear.values())
    cleared = {name.lower() for name in clear}
    for header in CONTRACT_HEADERS:  # Go keeps header names with underscores: every spelling
        assert {header.lower()} | {u.lower() for u in underscore_spellings(header)} <= cleared, header
    assert set(CERT_HEADERS + ORIGINAL_HEADERS + ROUTING_HEADERS) <= cleared
    for header in OVERRIDE_HEADERS:  # authz sees the dashed spelling only: the others never pass
        assert {u.lower() for u in underscore_spellings(header)} <= cleared, header
    forward = middlewares["authz"]["forwardAuth"]
    assert forward["address"].endswith("/forward-auth") and forward["trustForwardHeader"] is False
    assert forward["authResponseHeaders"] == CONTRACT_HEADERS
    to_authz = {h.lower() for h in forward["authRequestHeaders"]}
    assert set(OVERRIDE_HEADERS) <= to_authz and not to_authz & (set(CERT_HEADERS) - {"x-forwarded-tls-client-cert"})
    # the proxy secret reaches authz and never the API
    secret_at = next(i for i, n in enumerate(chain)
                     if "X-Authz-Proxy-Secret" in middlewares[n].get("headers", {}).get("customRequestHeaders", {}))
    secret = middlewares[chain[secret_at]]["headers"]["customRequestHeaders"]["X-Authz-Proxy-Secret"]
    assert "AUTHZ_PROXY_SECRET" in secret
    assert secret_at < chain.index("authz")
    assert middlewares[chain[-1]]["headers"]["customRequestHeaders"] == {"X-Authz-Proxy-Secret": ""}


@pytest.mark.parametrize("header", ["origin", "dpop", "signature", "signature-input", "content-digest", "cookie",
                                    "access-control-request-method"])
def test_every_door_passes_the_header_to_authz(header):
    """Headers authz judges as the client sent them reach it through every door: the
    browser's ``Origin`` (publishable keys, CORS preflights), the ``DPoP`` proof (RFC
    9449), a signed request's ``Signature``, ``Signature-Input`` and ``Content-Digest``
    (RFC 9421), ``Cookie`` (a token in a cookie) and ``Access-Control-Request-Method``
    (what a preflight announces). nginx and
    Caddy pass every request header unless told otherwise; Envoy's HTTP check and Traefik
    pass only those listed."""
    hcm, ext, _ = envoy("envoy-http.yaml")
    assert {"exact": header} in ext["http_service"]["authorization_request"]["allowed_headers"]["patterns"]
    assert header not in envoy_removes(hcm) and header not in envoy_removes(envoy("envoy-grpc.yaml")[0])
    forward = yaml.safe_load((DEPLOY / "traefik" / "dynamic.yaml").read_text())["http"]["middlewares"]["authz"]
    assert header in {h.lower() for h in forward["forwardAuth"]["authRequestHeaders"]}
    for conf in ("nginx/authz.conf", "nginx/authz-mtls.conf", "ingress-nginx/ingress.yaml"):
        assert not re.search(rf"proxy_set_header\s+{header}\b", (DEPLOY / conf).read_text(), re.I), conf
        assert not re.search(r"proxy_pass_request_headers\s+off", (DEPLOY / conf).read_text(), re.I), conf
    # (the header itself: Caddy does drop a client's DPoP-Nonce, a response header of authz's)
    assert not re.search(rf"request_header\s+-{header}(?![\w-])", (DEPLOY / "caddy" / "Caddyfile").read_text(), re.I)


@pytest.mark.parametrize("conf", ["nginx/authz.conf", "nginx/authz-mtls.conf", "ingress-nginx/ingress.yaml"])
def test_nginx_relays_the_dpop_nonce_on_401_and_200(conf):
    """nginx passes only WWW-Authenticate of a 401 auth answer by itself: the DPoP server
    nonce (RFC 9449 §9) is copied from authz's answer and added to every response."""
    text = (DEPLOY / conf).read_text()
    assert "auth_request_set $auth_dpop_nonce $upstream_http_dpop_nonce;" in text
    assert "add_header DPoP-Nonce $auth_dpop_nonce always;" in text


@pytest.mark.parametrize("conf", ["nginx/authz.conf", "nginx/authz-mtls.conf", "ingress-nginx/ingress.yaml"])
def test_nginx_relays_accept_signature_on_401(conf):
    """The signature a refused signed request must make (RFC 9421 §5.1 Accept-Signature)
    is copied from authz's 401 as the DPoP nonce is: nginx would drop it."""
    text = (DEPLOY / conf).read_text()
    assert "auth_request_set $auth_accept_signature $upstream_http_accept_signature;" in text
    assert "add_header Accept-Signature $auth_accept_signature always;" in text


def test_ingress_nginx():
    annotations = yaml.safe_load((DEPLOY / "ingress-nginx" / "ingress.yaml").read_text())["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/auth-url"].endswith("/auth-request")
    assert annotations["nginx.ingress.kubernetes.io/auth-response-headers"].split(",") == CONTRACT_HEADERS
    snippet = annotations["nginx.ingress.kubernetes.io/auth-snippet"]
    cleared = {m.lower() for m in re.findall(r'proxy_set_header (\S+) "";', snippet)}
    # ingress-nginx sets these itself in its auth location: a second line would send them twice
    named = {m.lower() for m in re.findall(r"proxy_set_header (\S+)", snippet)}
    assert not named & {"x-original-url", "x-original-method", "x-real-ip", "x-forwarded-for", "ssl-client-cert",
                        "ssl-client-verify"}
    assert "proxy_set_header X-Original-Host $host;" in snippet
    assert {"x-original-uri", "x-ssl-client-cert", "x-ssl-client-verify",
            "x-forwarded-tls-client-cert", "client-cert", "client-cert-chain", "x-forwarded-client-cert"} <= cleared
    assert "X-Authz-Proxy-Secret" in snippet


@pytest.mark.parametrize("name", ["authz.conf", "authz-mtls.conf"])
def test_nginx_sets_every_header_it_believes(name):
    text = (DEPLOY / "nginx" / name).read_text()
    protected, auth = re.search(r"location / \{(.*?)\n    \}\n\n    location = /_authz \{(.*?)\n    \}",
                                text, re.S).groups()
    set_upstream = {m.lower() for m in re.findall(r"proxy_set_header (\S+)", protected)}
    assert {h.lower() for h in CONTRACT_HEADERS} <= set_upstream
    assert {*ROUTING_HEADERS, "x-original-url", "x-original-uri", "x-forwarded-uri", "x-forwarded-host"} <= set_upstream
    set_authz = {m.lower() for m in re.findall(r"proxy_set_header (\S+)", auth)}
    assert set(CERT_HEADERS + ORIGINAL_HEADERS + ["x-forwarded-client-cert", "x-forwarded-for",
                                                  "x-forwarded-proto", "x-authz-proxy-secret"]) <= set_authz
    assert "default_server" in text and "server_name api.example.com;" in text


@pytest.mark.parametrize("name", ["authz.conf", "authz-mtls.conf"])
def test_nginx_keeps_connections_to_authz(name):
    """Each nginx door asks authz through an ``upstream`` with ``keepalive`` over HTTP/1.1
    with an empty ``Connection`` (without all three nginx opens a connection per
    subrequest); tests/test_serve.py counts the connections through a real nginx."""
    text = (DEPLOY / "nginx" / name).read_text()
    auth = re.search(r"location = /_authz \{(.*?)\n    \}", text, re.S).group(1)
    upstream = re.search(r"proxy_pass http://([\w-]+)/auth-request;", auth).group(1)
    block = re.search(rf"upstream {upstream} \{{(.*?)\}}", text, re.S).group(1)
    assert re.search(r"keepalive \d+;", block) and "server 127.0.0.1:8080;" in block
    assert "proxy_http_version 1.1;" in auth and 'proxy_set_header Connection "";' in auth


def test_both_nginx_doors_fit_in_one_nginx(tmp_path):
    """authz.conf and authz-mtls.conf in one ``http`` block: no upstream, map or variable
    defined twice (``nginx -t`` refuses duplicates)."""
    from tests.conftest import free_port, loopback_listens, nginx_conf
    from tests.pki import issue

    server = issue("api.example.com", issue("Server CA", ca=True), dns=["api.example.com"], eku=())
    (tmp_path / "server.pem").write_bytes(server.pem)
    (tmp_path / "server.key").write_bytes(server.key_pem)
    (tmp_path / "mesh-ca.pem").write_bytes(server.pem)
    plain = loopback_listens((DEPLOY / "nginx" / "authz.conf").read_text(), "80", free_port())
    tls = loopback_listens((DEPLOY / "nginx" / "authz-mtls.conf").read_text(), "443", free_port())
    nginx_conf(tmp_path / "nginx", plain + tls.replace("/etc/nginx/tls", str(tmp_path)))  # asserts nginx -t


def test_caddyfile_adapts_with_the_real_caddy(tmp_path):
    text = (DEPLOY / "caddy" / "Caddyfile").read_text()
    copied = re.search(r"copy_headers (.+)", text).group(1).split()
    assert copied == [*CONTRACT_HEADERS, "DPoP-Nonce"]
    # the nonce copied onto the request goes to the client's response, then off the request
    assert text.index("request_header -Dpop-Nonce") < text.index("forward_auth 127.0.0.1")
    assert (text.index("copy_headers") < text.index("header @dpop_nonce DPoP-Nonce")
            < text.index("request_header -DPoP-Nonce") < text.index("reverse_proxy"))
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path)}
    result = subprocess.run([caddy_binary(), "adapt", "--config", str(DEPLOY / "caddy" / "Caddyfile"),
                             "--adapter", "caddyfile"], capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr
    assert "/forward-auth" in result.stdout


def test_systemd_units():
    for name in ("authz.service", "authz-grpc.service"):
        unit = configparser.ConfigParser(strict=False, interpolation=None)
        unit.optionxform = str
        unit.read_string((DEPLOY / "systemd" / name).read_text())
        service = unit["Service"]
        assert service["User"] == "authz" and service["NoNewPrivileges"] == "true"
        assert "AUTHZ_DB" in (DEPLOY / "systemd" / name).read_text()
    assert "authz serve --bind 127.0.0.1:8080" in (DEPLOY / "systemd" / "authz.service").read_text()


def test_gunicorn_config_loads_the_app(tmp_path, store):
    env = {**os.environ, "AUTHZ_DB": store.url, "AUTHZ_POLICY_DIR": str(ROOT / "policies")}
    result = subprocess.run([str(BIN / "gunicorn"), "--check-config", "-c", str(DEPLOY / "gunicorn.conf.py"),
                             "wsgi:app"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
