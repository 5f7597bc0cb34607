"""Real TLS end to end: nginx terminates TLS with ``ssl_verify_client optional_no_ca``
(the README's mTLS block, verbatim but for paths and ports), forwards
``$ssl_client_escaped_cert`` and ``$ssl_client_verify`` to authz under gunicorn, and a
client presenting a real certificate is allowed with its SPIFFE ID as X-Auth-Service."""

import re

import pytest
import requests

from tests.conftest import ROOT, free_port, loopback_listens, start_nginx, write_policy
from tests.pki import DAY, NOW, Pki, issue

SPIFFE = "spiffe://corp/ns/payments/sa/api"
ECHO = "service=$http_x_auth_service;user=$http_x_auth_user"
API = "api.example.com"


class ApiNameAdapter(requests.adapters.HTTPAdapter):
    """Connects to the URL's address but says (SNI) and verifies ``API``."""

    def init_poolmanager(self, *args, **kwargs) -> None:
        kwargs["server_hostname"] = API
        super().init_poolmanager(*args, **kwargs)


def readme_mtls_block() -> str:
    blocks = re.findall(r"```nginx\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return next(b for b in blocks if "ssl_verify_client" in b)


@pytest.fixture
def tls(store, policy_dir, gunicorn, servers, tmp_path):
    pki = Pki()
    server_ca = issue("Server CA", ca=True)
    server = issue("api.example.com", server_ca, dns=["api.example.com"], eku=())
    tls_dir = tmp_path / "tls"
    tls_dir.mkdir()
    (tls_dir / "server.pem").write_bytes(server.pem)
    (tls_dir / "server.key").write_bytes(server.key_pem)
    (tls_dir / "server-ca.pem").write_bytes(server_ca.pem)
    (tls_dir / "mesh-ca.pem").write_bytes(pki.root.pem + pki.intermediate.pem)
    (policy_dir / "keys").mkdir()
    (policy_dir / "keys" / "mesh-ca.pem").write_bytes(pki.root.pem)
    (policy_dir / "keys" / "mesh-intermediates.pem").write_bytes(pki.intermediate.pem)
    write_policy(policy_dir, {
        "authenticators": {"mesh": {"type": "mtls", "ca_file": "keys/mesh-ca.pem", "cert_sources": ["nginx"],
                                    "intermediates_file": "keys/mesh-intermediates.pem"}},
        "routes": [{"id": "payments", "match": {"paths": ["/pay/**"]},
                    "require": {"use": "mesh", "principals": ["spiffe://corp/ns/payments/*"]}}]})
    authz = gunicorn(workers=2)
    port, upstream = free_port(), free_port()
    site = (loopback_listens(readme_mtls_block(), "443", port)
            .replace("/etc/nginx/tls", str(tls_dir))
            .replace("127.0.0.1:8080", f"127.0.0.1:{authz.port}")
            .replace("127.0.0.1:9000", f"127.0.0.1:{upstream}"))
    upstream_site = f"""
    server {{
        listen 127.0.0.1:{upstream};
        location / {{ default_type text/plain; return 200 "{ECHO}"; }}
    }}"""
    proc = start_nginx(servers, tmp_path, site + upstream_site, port)

    # The block's default server refuses a handshake for any other name (or none): ask
    # for the API's name, as a client resolving api.example.com to this nginx would.
    session = requests.Session()
    session.mount("https://", ApiNameAdapter())

    def get(path: str, cert=None):
        files = None
        if cert is not None:
            certfile, keyfile = tmp_path / f"c{id(cert)}.pem", tmp_path / f"c{id(cert)}.key"
            certfile.write_bytes(cert.pem + pki.intermediate.pem)
            keyfile.write_bytes(cert.key_pem)
            files = (str(certfile), str(keyfile))
        return session.get(f"https://127.0.0.1:{port}{path}", cert=files, verify=str(tls_dir / "server-ca.pem"),
                           headers={"Host": API}, timeout=5)

    deadline_ok = False
    for _ in range(100):
        try:
            get("/pay/x")
            deadline_ok = True
            break
        except requests.ConnectionError:
            if proc.proc.poll() is not None:
                break
            import time

            time.sleep(0.05)
    assert deadline_ok, (tmp_path / "nginx-error.log").read_text()[-2000:]
    get.pki = pki
    return get


def test_client_certificate_is_allowed_with_its_spiffe_id(tls):
    r = tls("/pay/orders", tls.pki.leaf(SPIFFE))
    assert r.status_code == 200
    assert r.text == f"service={SPIFFE};user="


def test_no_certificate(tls):
    assert tls("/pay/orders").status_code == 401


def test_certificate_of_another_ca(tls):
    other = issue("client", tls.pki.other_root, uris=[SPIFFE])
    assert tls("/pay/orders", other).status_code == 401


def test_expired_certificate(tls):
    expired = tls.pki.leaf(SPIFFE, not_before=NOW - 10 * DAY, not_after=NOW - DAY)
    # nginx 1.22 refuses an expired certificate itself even with optional_no_ca (400,
    # "The SSL certificate error"); newer builds pass it on and authz answers 401
    # (its own expiry check is tested header by header in test_mtls.py).
    assert tls("/pay/orders", expired).status_code in (400, 401)


def test_other_service_is_forbidden(tls):
    assert tls("/pay/orders", tls.pki.leaf("spiffe://corp/ns/billing/sa/api")).status_code == 403
