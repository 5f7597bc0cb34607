"""``authz policy init --profile NAME DIR``: starter policies for the usual situations,
each with a test file that passes (``authz policy test --policy-dir DIR``).

Profiles that need an identity provider or a CA get development ones, made on the
spot: public halves under ``DIR/keys/``, private halves under ``DIR/tests/keys/`` for
the tests only. Replace them (``jwks_uri`` of your IdP, your mesh CA) before production.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import jwt

from authz.credentials import devpki

HEALTH = {"id": "health", "match": {"paths": ["/healthz"], "methods": ["GET", "HEAD"]}, "require": "public"}
PUBLIC = {"type": "anonymous"}
ISSUER, AUDIENCE = "https://idp.example.com", "https://api.example.com"


def _jwt_auth() -> dict:
    return {"type": "jwt", "issuer": ISSUER, "audience": AUDIENCE, "algorithms": ["ES256"],
            "jwks_file": "keys/dev-idp.jwks.json",
            "description": "Development keys: replace jwks_file with your IdP's jwks_uri."}


def _mtls_auth() -> dict:
    return {"type": "mtls", "ca_file": "keys/dev-mesh-ca.pem", "cert_sources": ["xfcc", "api"],
            "description": "Development CA: replace ca_file with your mesh CA; name your proxy in cert_sources."}


def _claims(sub: str, scope: str | None = None) -> dict:
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub}
    if scope:
        claims["scope"] = scope
    return claims


def _case(name, method, path, expect, headers=None, **extra) -> dict:
    request = {"method": method, "url": f"https://api.example.com{path}", **extra}
    if headers:
        request["headers"] = headers
    return {"name": name, "request": request, "expect": expect}


PROFILES: dict[str, dict] = {
    "internal-tool": {
        "summary": "Staff sign in with Basic; admins reach /admin.",
        "policy": {"authenticators": {"staff": {"type": "basic", "realm": "internal"}, "public": PUBLIC},
                   "routes": [HEALTH,
                              {"id": "admin", "match": {"paths": ["/admin/**"]},
                               "require": {"use": "staff", "roles": ["admin"]}},
                              {"id": "app", "match": {"paths": ["/**"]}, "require": "staff"}]},
        "fixtures": {"users": [{"name": "ada", "password": "ada-password", "roles": ["admin"]},
                               {"name": "bo", "password": "bo-password", "roles": ["staff"]}]},
        "cases": [_case("staff use the tool", "GET", "/reports", {"decision": "allow", "principal": "bo"},
                        {"Authorization": "{{basic:bo}}"}),
                  _case("admins administer", "POST", "/admin/users", {"decision": "allow", "principal": "ada"},
                        {"Authorization": "{{basic:ada}}"}),
                  _case("staff do not", "POST", "/admin/users", {"status": 403, "reason": "principal_not_allowed"},
                        {"Authorization": "{{basic:bo}}"}),
                  _case("strangers are asked to sign in", "GET", "/reports",
                        {"status": 401, "reason": "credentials_missing"})],
    },
    "public-api": {
        "summary": "Developers call the API with live keys; reading and writing are separate scopes.",
        "policy": {"authenticators": {"dev_key": {"type": "api_key", "environments": ["live"]}, "public": PUBLIC},
                   "routes": [HEALTH, {"id": "docs", "match": {"paths": ["/docs/**"]}, "require": "public"},
                              {"id": "read", "match": {"paths": ["/v1/**"], "methods": ["GET", "HEAD"]},
                               "require": {"use": "dev_key", "scopes": ["api:read"]}},
                              {"id": "write", "match": {"paths": ["/v1/**"]},
                               "require": {"use": "dev_key", "scopes": ["api:write"]}}]},
        "fixtures": {"keys": [{"name": "reader", "principal": "acme", "scopes": ["api:read"]},
                              {"name": "sandbox", "principal": "acme", "scopes": ["api:read"], "env": "test"}]},
        "cases": [_case("a live key reads", "GET", "/v1/things", {"decision": "allow", "principal": "acme"},
                        {"X-API-Key": "{{key:reader}}"}),
                  _case("writing needs api:write", "POST", "/v1/things",
                        {"status": 403, "reason": "insufficient_scope"},
                        {"X-API-Key": "{{key:reader}}"}),
                  _case("test keys do not work here", "GET", "/v1/things", {"status": 401},
                        {"X-API-Key": "{{key:sandbox}}"}),
                  _case("docs are public", "GET", "/docs/intro", {"decision": "allow", "principal": None})],
    },
    "partner": {
        "summary": "Partner integrations: keys bound to partners' networks, one path prefix per partner.",
        "policy": {"authenticators": {"partner_key": {"type": "api_key", "environments": ["live"]}, "public": PUBLIC},
                   "routes": [HEALTH, {"id": "partner-orders", "match": {"paths": ["/partners/acme/**"]},
                                       "require": {"use": "partner_key", "principals": ["acme"]}}]},
        "fixtures": {"keys": [{"name": "acme", "principal": "acme", "allow_ips": ["203.0.113.0/24"]},
                              {"name": "globex", "principal": "globex", "allow_ips": ["198.51.100.0/24"]}]},
        "cases": [_case("acme from its network", "GET", "/partners/acme/orders",
                        {"decision": "allow", "principal": "acme"}, {"X-API-Key": "{{key:acme}}"},
                        client_ip="203.0.113.10"),
                  _case("acme from elsewhere", "GET", "/partners/acme/orders",
                        {"status": 401, "reason": "ip_not_allowed"},
                        {"X-API-Key": "{{key:acme}}"}, client_ip="192.0.2.1"),
                  _case("another partner", "GET", "/partners/acme/orders",
                        {"status": 403, "reason": "principal_not_allowed"}, {"X-API-Key": "{{key:globex}}"},
                        client_ip="198.51.100.7")],
    },
    "mobile-spa": {
        "summary": "Users of a mobile app or SPA present access tokens from your IdP.",
        "policy": {"authenticators": {"user_jwt": _jwt_auth(), "public": PUBLIC},
                   "routes": [HEALTH, {"id": "profile", "match": {"paths": ["/me/**"]}, "require": "user_jwt"},
                              {"id": "orders", "match": {"paths": ["/orders/**"]},
                               "require": {"use": "user_jwt", "scopes": ["orders"]}}]},
        "fixtures": {"tokens": [{"name": "alice", "claims": _claims("alice", "profile orders")},
                                {"name": "bob", "claims": _claims("bob", "profile")}]},
        "cases": [_case("a user reads their profile", "GET", "/me", {"decision": "allow", "principal": "alice"},
                        {"Authorization": "Bearer {{token:alice}}"}),
                  _case("orders need the orders scope", "GET", "/orders/1",
                        {"status": 403, "reason": "insufficient_scope"}, {"Authorization": "Bearer {{token:bob}}"}),
                  _case("no token", "GET", "/me", {"status": 401, "reason": "credentials_missing"})],
    },
    "microservices": {
        "summary": "Services call each other with mesh certificates; SPIFFE IDs decide.",
        "policy": {"authenticators": {"mesh": _mtls_auth(), "public": PUBLIC},
                   "routes": [HEALTH, {"id": "payments", "match": {"paths": ["/payments/**"]},
                                       "require": {"use": "mesh", "principals": ["spiffe://corp/ns/checkout/*"]}}]},
        "fixtures": {"certs": [{"name": "checkout", "uri": "spiffe://corp/ns/checkout/sa/api"},
                               {"name": "search", "uri": "spiffe://corp/ns/search/sa/api"}]},
        "cases": [_case("checkout may pay", "POST", "/payments/charge",
                        {"decision": "allow", "principal": "spiffe://corp/ns/checkout/sa/api"},
                        client_cert="{{cert:checkout}}"),
                  _case("search may not", "POST", "/payments/charge",
                        {"status": 403, "reason": "principal_not_allowed"},
                        client_cert="{{cert:search}}"),
                  _case("no certificate", "POST", "/payments/charge", {"status": 401})],
    },
    "zero-trust": {
        "summary": "Every call carries a mesh certificate AND a user token bound to it (RFC 8705).",
        "policy": {"authenticators": {"mesh": _mtls_auth(), "user_jwt": _jwt_auth(), "public": PUBLIC},
                   "routes": [HEALTH, {"id": "api", "match": {"paths": ["/**"]},
                                       "require": {"all": ["mesh", {"use": "user_jwt", "bind_certificate": True}]}}]},
        "fixtures": {"certs": [{"name": "web", "uri": "spiffe://corp/ns/web/sa/frontend"}],
                     "tokens": [{"name": "bound", "claims": _claims("alice"), "bind_to": "web"},
                                {"name": "unbound", "claims": _claims("alice")}]},
        "cases": [_case("certificate and bound token", "GET", "/accounts",
                        {"decision": "allow", "principal": "alice"},
                        {"Authorization": "Bearer {{token:bound}}"}, client_cert="{{cert:web}}"),
                  _case("an unbound token is refused", "GET", "/accounts",
                        {"status": 401, "reason": "credentials_invalid"},
                        {"Authorization": "Bearer {{token:unbound}}"}, client_cert="{{cert:web}}"),
                  _case("a token without the certificate", "GET", "/accounts", {"status": 401},
                        {"Authorization": "Bearer {{token:bound}}"})],
    },
}


def _dev_idp(directory: Path) -> None:
    key = devpki.new_key()
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "dev", "alg": "ES256", "use": "sig"})
    (directory / "keys" / "dev-idp.jwks.json").write_text(json.dumps({"keys": [jwk]}, indent=2) + "\n")
    (directory / "tests" / "keys" / "dev-idp.key").write_bytes(devpki.private_pem(key))


def _dev_ca(directory: Path) -> None:
    ca = devpki.issue("Development Mesh CA", ca=True, not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=365))
    (directory / "keys" / "dev-mesh-ca.pem").write_bytes(ca.pem)
    (directory / "tests" / "keys" / "dev-mesh-ca.key").write_bytes(ca.key_pem)


def write_profile(name: str, directory: Path) -> list[Path]:
    """Write the profile's policy, tests and development keys; refuses to overwrite."""
    profile = PROFILES[name]
    directory = Path(directory)
    policy_file, tests_file = directory / f"{name}.json", directory / "tests" / f"{name}.json"
    existing = [p for p in (policy_file, tests_file) if p.exists()]
    if existing:
        raise FileExistsError(f"{existing[0]} exists already: nothing written")
    for sub in ("keys", "tests/keys"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    text = json.dumps(profile["policy"])
    if "dev-idp" in text and not (directory / "keys" / "dev-idp.jwks.json").exists():
        _dev_idp(directory)
    if "dev-mesh-ca" in text and not (directory / "keys" / "dev-mesh-ca.pem").exists():
        _dev_ca(directory)
    policy_file.write_text(json.dumps({"$schema": "https://github.com/authz/authz/schemas/policy.schema.json",
                                       "description": profile["summary"], **profile["policy"]}, indent=2) + "\n")
    tests_file.write_text(json.dumps({"description": f"Tests for {name}.json: authz policy test",
                                      "fixtures": profile["fixtures"], "cases": profile["cases"]}, indent=2) + "\n")
    return [policy_file, tests_file]
