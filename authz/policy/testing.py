"""``authz policy test``: operators' own test cases for their policies, like ``opa test``.

A test file (``policies/tests/*.json``)::

    {"fixtures": {"keys":  [{"name": "partner", "principal": "partner-a", "scopes": ["orders:read"]}],
                  "users": [{"name": "alice", "password": "pw", "roles": ["admin"]}]},
     "cases": [{"name": "partners read orders",
                "request": {"method": "GET", "url": "https://api.example.com/v1/orders/1",
                            "headers": {"X-API-Key": "{{key:partner}}"}},
                "expect": {"decision": "allow", "status": 200, "principal": "partner-a"}}]}

``{{key:NAME}}`` becomes the fixture key's secret, ``{{basic:USER}}`` a Basic
``Authorization`` value for a fixture user. Cases run against the policy directory and
a throwaway store seeded from the fixtures; ``expect`` may name ``decision``,
``status``, ``principal``, ``reason`` and ``route``.
"""

from __future__ import annotations

import base64
import json
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import jwt

from authz.adapters.api import InvalidBody, describe
from authz.admin import Admin
from authz.authenticators import Context
from authz.engine import DecisionEngine
from authz.policy.loader import load_policy
from authz.request import BadRequest
from authz.store import Store, open_store

_PLACEHOLDER = re.compile(r"\{\{(key|basic|token|cert):([^}]+)\}\}")
EXPECTABLE = ("decision", "status", "principal", "reason", "route")


@dataclass
class CaseResult:
    file: str
    name: str
    passed: bool
    problems: list[str]


def run_file(path: Path, policy_dir: Path) -> list[CaseResult]:
    spec = json.loads(path.read_text())
    with tempfile.TemporaryDirectory(prefix="authz-policy-test-") as tmp:
        store = open_store(Path(tmp) / "test.db", last_used_interval=3600)
        store.migrate()
        secrets = _seed(store, spec.get("fixtures", {}), policy_dir)
        engine = DecisionEngine(load_policy(policy_dir, Context(store=store)))
        results = []
        for index, case in enumerate(spec.get("cases", [])):
            name = case.get("name") or f"case {index}"
            try:
                request = describe(_fill(case["request"], secrets))
                decision = engine.decide(request)
                got = decision.to_json()
                got["principal"] = decision.principal.id if decision.principal else None
            except (InvalidBody, BadRequest, KeyError) as exc:
                results.append(CaseResult(str(path), name, False, [f"bad case: {exc}"]))
                continue
            expect = case.get("expect", {})
            problems = [f"{field}: expected {expect[field]!r}, got {got[field]!r}"
                        for field in EXPECTABLE if field in expect and got[field] != expect[field]]
            if problems and got.get("detail"):
                problems.append(f"(detail: {got['detail']})")
            results.append(CaseResult(str(path), name, not problems, problems))
        store.last_used.flush()  # now, while the throwaway store still exists (not at exit)
        return results


def _seed(store: Store, fixtures: dict, policy_dir: Path) -> dict[tuple[str, str], str]:
    secrets: dict[tuple[str, str], str] = {}
    ders: dict[str, bytes] = {}
    for cert in fixtures.get("certs", []):
        pem, ders[cert["name"]] = _issue_cert(cert, policy_dir)
        secrets[("cert", cert["name"])] = pem
    for token in fixtures.get("tokens", []):
        secrets[("token", token["name"])] = _mint(token, policy_dir, ders)
    for user in fixtures.get("users", []):
        Admin(store).users.add(user["name"], user["password"], user.get("scopes", ()), user.get("roles", ()))
        basic = base64.b64encode(f"{user['name']}:{user['password']}".encode()).decode()
        secrets[("basic", user["name"])] = f"Basic {basic}"
    for key in fixtures.get("keys", []):
        _, secret = Admin(store).keys.create(key["principal"], key.get("scopes", ()), key.get("env", "live"),
                                             key.get("allow_ips", ()))
        secrets[("key", key["name"])] = secret
    return secrets


def _mint(spec: dict, policy_dir: Path, ders: dict[str, bytes]) -> str:
    """A token signed with a development key the policy trusts (``key_file``)."""
    from cryptography.hazmat.primitives import serialization

    from authz.credentials.x509 import thumbprint

    key = serialization.load_pem_private_key((policy_dir / spec.get("key_file", "tests/keys/dev-idp.key"))
                                             .read_bytes(), password=None)
    now = int(time.time())
    claims = {"iat": now, "exp": now + 300, **spec.get("claims", {})}
    if spec.get("bind_to"):
        claims["cnf"] = {"x5t#S256": thumbprint(ders[spec["bind_to"]])}
    return jwt.encode(claims, key, algorithm=spec.get("alg", "ES256"), headers={"kid": spec.get("kid", "dev")})


def _issue_cert(spec: dict, policy_dir: Path) -> tuple[str, bytes]:
    """A client certificate from a development CA (``ca_key_file``, ``ca_cert_file``)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_key = serialization.load_pem_private_key(
        (policy_dir / spec.get("ca_key_file", "tests/keys/dev-mesh-ca.key")).read_bytes(), password=None)
    ca = x509.load_pem_x509_certificate((policy_dir / spec.get("ca_cert_file", "keys/dev-mesh-ca.pem")).read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, spec["name"])]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spec["uri"])]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode(), cert.public_bytes(serialization.Encoding.DER)


def _fill(value, secrets):
    if isinstance(value, str):
        return _PLACEHOLDER.sub(lambda m: secrets[(m.group(1), m.group(2))], value)
    if isinstance(value, dict):
        return {k: _fill(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, secrets) for v in value]
    return value
