"""mTLS: every proxy's certificate headers, verified here against the CA; principal
mapping; revocation by fingerprint, serial and CRL; RFC 8705 bound tokens.

Requests go through the nginx front door (``/auth-request``) with the headers each
proxy sends (PROXIES.md); certificates come from a real PKI made in ``tests/pki.py``."""

import base64
import time
from urllib.parse import quote

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.conftest import add_user
from tests.idp import AUDIENCE, ISSUER, mint, public_pem, rsa_key
from tests.pki import DAY, NOW, Pki, crl

PKI = Pki()
LEAF = PKI.leaf()
SPIFFE = "spiffe://corp/ns/payments/sa/api"
IDP_KEY = rsa_key()


@pytest.fixture
def client(store, make_client, policy_dir):
    keys = policy_dir / "keys"
    keys.mkdir()
    (keys / "mesh-ca.pem").write_bytes(PKI.root.pem)
    (keys / "idp.pem").write_bytes(public_pem(IDP_KEY))

    def make(mesh=None, routes=None, files=None, **settings):
        for filename, data in (files or {}).items():
            (keys / filename).write_bytes(data)
        mesh_config = {"type": "mtls", "ca_file": "keys/mesh-ca.pem", **(mesh or {})}
        return make_client({
            "authenticators": {
                "mesh": mesh_config,
                "user_jwt": {"type": "jwt", "issuer": ISSUER, "audience": AUDIENCE, "algorithms": ["RS256"],
                             "public_key_file": "keys/idp.pem"},
                "staff": {"type": "basic", "realm": "staff"},
            },
            "routes": routes or [
                {"id": "payments", "match": {"paths": ["/pay/**"]},
                 "require": {"use": "mesh", "principals": ["spiffe://corp/ns/payments/*"]}},
                {"id": "bound", "match": {"paths": ["/bound/**"]},
                 "require": {"all": ["mesh", {"use": "user_jwt", "bind_certificate": True}]}},
                {"id": "both", "match": {"paths": ["/both/**"]}, "require": {"all": ["mesh", "user_jwt"]}},
                {"id": "any", "match": {"paths": ["/any/**"]}, "require": "mesh"},
            ]}, **settings)

    return make


def ask(client, path="/pay/x", remote="127.0.0.1", **headers):
    """As nginx asks: its certificate header always comes with its verify header
    (SUCCESS unless the test says otherwise; ``X_SSL_Client_Verify=None`` drops it)."""
    base = {"X-Original-URI": path, "X-Original-Method": "GET"}
    if "X_SSL_Client_Cert" in headers:
        headers.setdefault("X_SSL_Client_Verify", "SUCCESS")
    base.update({k.replace("_", "-"): v for k, v in headers.items() if v is not None})
    return client.get("/auth-request", headers=base, environ_base={"REMOTE_ADDR": remote})


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def nginx_escaped(*certs) -> str:
    return quote(b"".join(c.pem for c in certs).decode(), safe="")


def xfcc(cert_pems=None, chain=None, hash_=None, extra_left=None) -> str:
    parts = ['By=spiffe://corp/ns/edge/sa/envoy']
    if hash_:
        parts.append(f"Hash={hash_}")
    if cert_pems:
        parts.append("Cert=" + quote(cert_pems, safe=""))
    if chain:
        parts.append("Chain=" + quote(chain, safe=""))
    parts.append('Subject="/O=Corp/CN=client, with comma"')
    parts.append(f"URI={SPIFFE}")
    element = ";".join(parts)
    return f"{extra_left},{element}" if extra_left else element


def b64der(*certs) -> str:
    return ",".join(base64.b64encode(c.der).decode() for c in certs)


# -- every header format ---------------------------------------------------------------
@pytest.mark.parametrize("headers", [
    pytest.param(lambda: {"X-SSL-Client-Cert": nginx_escaped(LEAF, PKI.intermediate),
                          "X-SSL-Client-Verify": "SUCCESS"}, id="nginx-escaped"),
    pytest.param(lambda: {"ssl-client-cert": nginx_escaped(LEAF, PKI.intermediate),
                          "ssl-client-verify": "SUCCESS"}, id="ingress-nginx"),
    pytest.param(lambda: {"X-SSL-Client-Cert": (LEAF.pem + PKI.intermediate.pem).decode()
                          .strip().replace("\n", "\t"), "X-SSL-Client-Verify": "SUCCESS"}, id="nginx-tab-continued"),
    pytest.param(lambda: {"X-Forwarded-Client-Cert": xfcc(LEAF.pem.decode(),
                                                          (LEAF.pem + PKI.intermediate.pem).decode())},
                 id="xfcc-cert-chain"),
    pytest.param(lambda: {"X-Forwarded-Tls-Client-Cert": b64der(LEAF, PKI.intermediate)}, id="traefik"),
    pytest.param(lambda: {"Client-Cert": f":{base64.b64encode(LEAF.der).decode()}:",
                          "Client-Cert-Chain": f":{base64.b64encode(PKI.intermediate.der).decode()}:"}, id="rfc9440"),
])
def test_each_header_format_with_an_intermediate(client, headers):
    r = ask(client(), **headers())
    assert r.status_code == 200, r.headers.get("X-Auth-Reason")
    assert r.headers["X-Auth-Service"] == SPIFFE and r.headers["X-Auth-Methods"] == "mtls"


def test_caddy_header(client):
    c = client(mesh={"cert_header": "X-Client-Cert", "cert_sources": ["api"]})
    leaf = PKI.leaf(issuer=PKI.root)  # Caddy forwards the leaf only
    r = ask(c, X_Client_Cert=base64.b64encode(leaf.der).decode())
    assert r.status_code == 200 and r.headers["X-Auth-Service"] == SPIFFE


def test_decisions_api_client_cert(client):
    r = client().post("/v1/decisions", json={"method": "GET", "url": "http://h/pay/x",
                                              "client_cert": (LEAF.pem + PKI.intermediate.pem).decode()})
    assert r.status_code == 200 and r.get_json()["principal"]["kind"] == "service"
    assert r.get_json()["identities"][0]["credential"] == LEAF.sha256


# -- refusals -----------------------------------------------------------------------------
@pytest.mark.parametrize("mesh", [{}, {"proxy_verified": "require"}])
def test_no_certificate_is_absent(client, mesh):
    r = ask(client(mesh=mesh), X_SSL_Client_Verify="NONE")
    assert (r.status_code, r.headers["X-Auth-Reason"]) == (401, "credentials_missing")


def test_no_certificate_lets_another_alternative_decide(client, store):
    add_user(store, "alice", "alice-pw")
    c = client(mesh={"proxy_verified": "require"}, routes=[
        {"id": "r", "require": {"any": ["mesh", "staff"]}}])
    r = ask(c, X_SSL_Client_Verify="NONE", Authorization=basic("alice", "alice-pw"))
    assert (r.status_code, r.headers["X-Auth-User"]) == (200, "alice")


@pytest.mark.parametrize("header", ["X-SSL-Client-Cert", "ssl-client-cert"])
@pytest.mark.parametrize("mesh", [{}, {"cert_sources": ["nginx"], "proxy_verified": "require"}])
def test_certificate_header_without_the_verify_header_is_refused(client, header, mesh):
    # A certificate is public: without the door's verify header beside it, anyone could
    # have copied a service's certificate into the header.
    r = client(mesh=mesh).get("/auth-request", headers={
        "X-Original-URI": "/pay/x", "X-Original-Method": "GET", header: nginx_escaped(LEAF, PKI.intermediate)})
    assert (r.status_code, r.headers["X-Auth-Reason"]) == (401, "credentials_invalid")


@pytest.mark.parametrize(("leaf", "detail_reason"), [
    (lambda: PKI.leaf(not_after=NOW - DAY, not_before=NOW - 10 * DAY), "credential_expired"),
    (lambda: PKI.leaf(not_before=NOW + DAY), "credentials_invalid"),
    (lambda: PKI.leaf(issuer=PKI.other_root), "credentials_invalid"),
    (lambda: PKI.leaf(eku=(ExtendedKeyUsageOID.SERVER_AUTH,)), "credentials_invalid"),
    (lambda: PKI.leaf(san=False), "credentials_invalid"),
])
def test_untrusted_certificates(client, leaf, detail_reason):
    cert = leaf()
    r = ask(client(), X_SSL_Client_Cert=nginx_escaped(cert, PKI.intermediate))
    assert (r.status_code, r.headers["X-Auth-Reason"]) == (401, detail_reason)


def test_missing_san_allowed_with_subject_cn(client):
    cert = PKI.leaf(san=False)
    r = ask(client(mesh={"allow_missing_san": True, "principal_from": "subject_cn"}, routes=[
        {"id": "r", "require": "mesh"}]), X_SSL_Client_Cert=nginx_escaped(cert, PKI.intermediate))
    assert r.status_code == 200 and r.headers["X-Auth-Service"] == "client"


def test_forged_xfcc_from_untrusted_peer(client):
    r = ask(client(), remote="198.51.100.9", X_Forwarded_Client_Cert=xfcc(LEAF.pem.decode()))
    assert (r.status_code, r.headers["X-Auth-Reason"]) == (403, "untrusted_proxy")


def test_spoofed_left_xfcc_element_is_ignored(client):
    attacker = PKI.leaf("spiffe://corp/ns/payments/sa/admin")
    spoof = "Cert=" + quote(attacker.pem.decode(), safe="") + ';URI=spiffe://corp/ns/payments/sa/admin'
    real = xfcc(LEAF.pem.decode(), (LEAF.pem + PKI.intermediate.pem).decode(), extra_left=spoof)
    r = ask(client(), X_Forwarded_Client_Cert=real)
    assert r.status_code == 200 and r.headers["X-Auth-Service"] == SPIFFE


def test_xfcc_hash_alone_needs_registration(client, store):
    store.certificates.register("payments-api", LEAF.sha256)
    header = xfcc(hash_=LEAF.sha256)
    assert ask(client(), X_Forwarded_Client_Cert=header).status_code == 401
    c = client(mesh={"principal_from": "registered"}, routes=[{"id": "r", "require": "mesh"}])
    r = ask(c, X_Forwarded_Client_Cert=header)
    assert r.status_code == 200 and r.headers["X-Auth-Service"] == "payments-api"


def test_conflicting_headers_are_refused(client):
    other = PKI.leaf("spiffe://corp/ns/payments/sa/other")
    r = ask(client(), X_SSL_Client_Cert=nginx_escaped(LEAF, PKI.intermediate),
            X_Forwarded_Tls_Client_Cert=b64der(other, PKI.intermediate))
    assert (r.status_code, r.headers["X-Auth-Reason"]) == (401, "credentials_invalid")


def test_cert_sources_limits_what_is_believed(client):
    c = client(mesh={"cert_sources": ["nginx"]})
    r = ask(c, X_Forwarded_Tls_Client_Cert=b64der(LEAF, PKI.intermediate))
    assert r.headers["X-Auth-Reason"] == "credentials_missing"


def test_proxy_verified(client):
    c = client(mesh={"proxy_verified": "require"})
    cert = nginx_escaped(LEAF, PKI.intermediate)
    assert ask(c, X_SSL_Client_Cert=cert, X_SSL_Client_Verify="SUCCESS").status_code == 200
    r = ask(c, X_SSL_Client_Cert=cert, X_SSL_Client_Verify="FAILED:unable to verify the first certificate")
    assert r.status_code == 401
    # a certificate while nginx says none was presented: someone else set the header
    assert ask(client(), X_SSL_Client_Cert=cert, X_SSL_Client_Verify="NONE").status_code == 401


@pytest.mark.parametrize("value", ["garbage", quote("-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----")])
def test_unreadable_header_is_refused(client, value):
    r = ask(client(), X_SSL_Client_Cert=value)
    assert (r.status_code, r.headers["X-Auth-Reason"]) == (401, "credentials_invalid")


def test_principal_globs_and_mapping(client):
    other = PKI.leaf("spiffe://corp/ns/billing/sa/api")
    r = ask(client(), X_SSL_Client_Cert=nginx_escaped(other, PKI.intermediate))
    assert (r.status_code, r.headers["X-Auth-Reason"]) == (403, "principal_not_allowed")
    dns = PKI.leaf(spiffe=None, dns=["api.payments.corp"], emails=["ops@corp.example"])
    for principal_from, expected in (("san_dns", "api.payments.corp"), ("san_email", "ops@corp.example"),
                                     ("subject_cn", "client")):
        c = client(mesh={"principal_from": principal_from}, routes=[{"id": "r", "require": "mesh"}])
        assert ask(c, X_SSL_Client_Cert=nginx_escaped(dns, PKI.intermediate)).headers["X-Auth-Service"] == expected


# -- revocation --------------------------------------------------------------------------
def test_revoked_fingerprint_and_serial(client, store):
    c = client()
    a, b = PKI.leaf(), PKI.leaf()
    assert ask(c, X_SSL_Client_Cert=nginx_escaped(a, PKI.intermediate)).status_code == 200
    store.certificates.revoke_fingerprint(a.sha256.upper())
    r = ask(c, X_SSL_Client_Cert=nginx_escaped(a, PKI.intermediate))
    assert (r.status_code, r.headers["X-Auth-Reason"]) == (401, "credential_revoked")
    assert ask(c, X_SSL_Client_Cert=nginx_escaped(b, PKI.intermediate)).status_code == 200
    store.certificates.revoke_serial(PKI.intermediate.cert.subject.rfc4514_string(),
                                     format(b.cert.serial_number, "X"))
    assert ask(c, X_SSL_Client_Cert=nginx_escaped(b, PKI.intermediate)).headers["X-Auth-Reason"] == "credential_revoked"


def test_crl(client):
    revoked, good = PKI.leaf(), PKI.leaf()
    c = client(mesh={"crl_files": ["keys/issuing.crl"]},
               files={"issuing.crl": crl(PKI.intermediate, [revoked])})
    assert ask(c, X_SSL_Client_Cert=nginx_escaped(good, PKI.intermediate)).status_code == 200
    r = ask(c, X_SSL_Client_Cert=nginx_escaped(revoked, PKI.intermediate))
    assert (r.status_code, r.headers["X-Auth-Reason"]) == (401, "credential_revoked")


def test_stale_crl_denies(client):
    c = client(mesh={"crl_files": ["keys/stale.crl"]},
               files={"stale.crl": crl(PKI.intermediate, [], last_update=NOW - 9 * DAY, next_update=NOW - DAY)})
    r = ask(c, X_SSL_Client_Cert=nginx_escaped(LEAF, PKI.intermediate))
    assert r.status_code == 401


def test_crl_signed_by_someone_else_denies(client):
    forged = crl(PKI.other_root, [])
    forged = forged  # issuer name differs: not applicable to this chain; now a same-name forgery:
    from tests.pki import issue

    impostor = issue("Mesh Issuing CA", ca=True)  # same subject, different key
    c = client(mesh={"crl_files": ["keys/forged.crl"]}, files={"forged.crl": crl(impostor, [])})
    assert ask(c, X_SSL_Client_Cert=nginx_escaped(LEAF, PKI.intermediate)).status_code == 401


# -- certificate-bound tokens (RFC 8705) ----------------------------------------------------
def x5t(issued) -> str:
    from authz.certs import thumbprint

    return thumbprint(issued.der)


def test_bound_token_with_its_certificate(client):
    token = mint(IDP_KEY, kid=None, cnf={"x5t#S256": x5t(LEAF)})
    r = ask(client(), "/bound/x", X_SSL_Client_Cert=nginx_escaped(LEAF, PKI.intermediate),
            Authorization=f"Bearer {token}")
    assert r.status_code == 200
    assert (r.headers["X-Auth-User"], r.headers["X-Auth-Service"]) == ("alice", SPIFFE)
    assert r.headers["X-Auth-Methods"] == "mtls,jwt"


def test_bound_token_with_the_wrong_certificate(client):
    other = PKI.leaf()
    token = mint(IDP_KEY, kid=None, cnf={"x5t#S256": x5t(LEAF)})
    for path in ("/bound/x", "/both/x"):
        r = ask(client(), path, X_SSL_Client_Cert=nginx_escaped(other, PKI.intermediate),
                Authorization=f"Bearer {token}")
        assert (r.status_code, r.headers["X-Auth-Reason"]) == (401, "credentials_invalid")


def test_unbound_token_where_binding_is_required(client):
    token = mint(IDP_KEY, kid=None)
    r = ask(client(), "/bound/x", X_SSL_Client_Cert=nginx_escaped(LEAF, PKI.intermediate),
            Authorization=f"Bearer {token}")
    assert (r.status_code, r.headers["X-Auth-Reason"]) == (401, "credentials_invalid")
    r = ask(client(), "/both/x", X_SSL_Client_Cert=nginx_escaped(LEAF, PKI.intermediate),
            Authorization=f"Bearer {token}")
    assert r.status_code == 200


def test_bind_certificate_placement_is_checked(client):
    from authz.policy import PolicyError

    with pytest.raises(PolicyError, match="bind_certificate goes on a jwt leaf"):
        client(routes=[{"id": "r", "require": {"any": ["mesh", {"use": "user_jwt", "bind_certificate": True}]}}])
    with pytest.raises(PolicyError, match="bind_certificate goes on a jwt leaf"):
        client(routes=[{"id": "r", "require": {"use": "user_jwt", "bind_certificate": True}}])


def test_verified_chain_is_cached_but_revocation_is_not(client, store, monkeypatch):
    from cryptography.x509.verification import ClientVerifier  # noqa: F401

    from authz.authenticators import mtls

    calls = []
    real = mtls.MtlsAuthenticator._verify
    monkeypatch.setattr(mtls.MtlsAuthenticator, "_verify", lambda self, chain: calls.append(1) or real(self, chain))
    c = client()
    cert = PKI.leaf()
    for _ in range(3):
        assert ask(c, X_SSL_Client_Cert=nginx_escaped(cert, PKI.intermediate)).status_code == 200
    assert len(calls) == 1
    store.certificates.revoke_fingerprint(cert.sha256)
    assert ask(c, X_SSL_Client_Cert=nginx_escaped(cert, PKI.intermediate)).status_code == 401


def test_cached_certificate_still_expires(client):
    cert = PKI.leaf(not_after=NOW.replace(microsecond=0) + (time.time() - NOW.timestamp() + 2) * DAY / 86400)
    c = client()
    assert ask(c, X_SSL_Client_Cert=nginx_escaped(cert, PKI.intermediate)).status_code == 200
    time.sleep(2.2)
    r = ask(c, X_SSL_Client_Cert=nginx_escaped(cert, PKI.intermediate))
    assert (r.status_code, r.headers["X-Auth-Reason"]) == (401, "credential_expired")
