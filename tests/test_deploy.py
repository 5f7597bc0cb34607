"""deploy/: every configuration is checked — run by a real server where one exists
here (nginx, Caddy: see also test_nginx*.py and test_front_doors.py), parsed and held
to the contract (paths, header names) where none does (Envoy, Traefik, ingress-nginx,
systemd)."""

import configparser
import os
import re
import subprocess

import yaml

from tests.conftest import BIN, ROOT, caddy_binary

DEPLOY = ROOT / "deploy"
CONTRACT_HEADERS = ["X-Auth-Principal", "X-Auth-User", "X-Auth-Client", "X-Auth-Service", "X-Auth-Methods",
                    "X-Auth-Scopes", "X-Auth-Route", "X-Auth-Token"]


def test_readme_nginx_blocks_are_the_deploy_files():
    blocks = re.findall(r"```nginx\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert (DEPLOY / "nginx" / "authz.conf").read_text() in blocks
    assert (DEPLOY / "nginx" / "authz-mtls.conf").read_text() in blocks


def test_envoy_http():
    config = yaml.safe_load((DEPLOY / "envoy" / "envoy-http.yaml").read_text())
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    ext = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_authz")["typed_config"]
    assert ext["failure_mode_allow"] is False and ext["transport_api_version"] == "V3"
    http = ext["http_service"]
    assert http["path_prefix"] == "/ext-authz"
    allowed = {p["exact"] for p in http["authorization_request"]["allowed_headers"]["patterns"]}
    assert {"authorization", "x-api-key", "x-forwarded-client-cert", "x-forwarded-for"} <= allowed
    upstream = http["authorization_response"]["allowed_upstream_headers"]["patterns"]
    assert {"prefix": "x-auth-"} in upstream
    client = {p["exact"] for p in http["authorization_response"]["allowed_client_headers"]["patterns"]}
    assert {"www-authenticate", "x-auth-reason"} <= client
    # XFCC: only what this Envoy sets reaches authz (SANITIZE_SET drops a client's own)
    assert hcm["forward_client_cert_details"] == "SANITIZE_SET"


def test_envoy_grpc():
    config = yaml.safe_load((DEPLOY / "envoy" / "envoy-grpc.yaml").read_text())
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    ext = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_authz")["typed_config"]
    assert ext["grpc_service"]["envoy_grpc"]["cluster_name"] == "authz_grpc"
    assert ext["include_peer_certificate"] is True and ext["failure_mode_allow"] is False
    cluster = next(c for c in config["static_resources"]["clusters"] if c["name"] == "authz_grpc")
    assert "http2_protocol_options" in str(cluster)
    assert "--bind 127.0.0.1:9191" in (DEPLOY / "systemd" / "authz-grpc.service").read_text()
    assert "port_value: 9191" in (DEPLOY / "envoy" / "envoy-grpc.yaml").read_text()


def test_traefik():
    config = yaml.safe_load((DEPLOY / "traefik" / "dynamic.yaml").read_text())
    router = config["http"]["routers"]["api"]
    middlewares = config["http"]["middlewares"]
    order = [next(iter(middlewares[name])) for name in router["middlewares"]]
    assert order == ["passTLSClientCert", "forwardAuth"]  # the certificate header must exist first
    forward = middlewares["authz"]["forwardAuth"]
    assert forward["address"].endswith("/forward-auth") and forward["trustForwardHeader"] is False
    assert forward["authResponseHeaders"] == CONTRACT_HEADERS


def test_ingress_nginx():
    annotations = yaml.safe_load((DEPLOY / "ingress-nginx" / "ingress.yaml").read_text())["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/auth-url"].endswith("/auth-request")
    assert annotations["nginx.ingress.kubernetes.io/auth-response-headers"].split(",") == CONTRACT_HEADERS
    assert "X-Original-Method" in annotations["nginx.ingress.kubernetes.io/auth-snippet"]


def test_caddyfile_adapts_with_the_real_caddy(tmp_path):
    text = (DEPLOY / "caddy" / "Caddyfile").read_text()
    copied = re.search(r"copy_headers (.+)", text).group(1).split()
    assert copied == CONTRACT_HEADERS
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
    assert "wsgi:app" in (DEPLOY / "systemd" / "authz.service").read_text()


def test_gunicorn_config_loads_the_app(tmp_path, store):
    env = {**os.environ, "AUTHZ_DB": str(store.path), "AUTHZ_POLICY_DIR": str(ROOT / "policies")}
    result = subprocess.run([str(BIN / "gunicorn"), "--check-config", "-c", str(DEPLOY / "gunicorn.conf.py"),
                             "wsgi:app"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
