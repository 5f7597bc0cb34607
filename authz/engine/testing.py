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
``status``, ``principal``, ``reason``, ``route`` and ``methods`` (``["preflight"]`` for an
allowed CORS preflight).

A case's ``request`` is what ``POST /v1/decisions`` takes (``CheckRequest.from_json``).
Running cases evaluates, so this lives on the engine's side of the layout; the reader
of client-certificate headers (a front door's knowledge) is passed in by the caller.
"""

from __future__ import annotations

import base64
import json
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jwt

from authz.admin import Admin
from authz.authenticators import Context
from authz.engine.decide import DecisionEngine
from authz.errors import AuthzError
from authz.policy.loader import load_policy
from authz.request import BadRequest, CheckRequest, ForwardedCert, Headers, InvalidBody
from authz.store import Store, open_store

_PLACEHOLDER = re.compile(r"\{\{(key|basic|token|cert):([^}]+)\}\}")
EXPECTABLE = ("decision", "status", "principal", "reason", "route", "methods")


class BadTestFile(AuthzError):
    """A policy test file that cannot be run: not JSON, not shaped as documented, or
    with a fixture that cannot be made."""


@dataclass
class CaseResult:
    file: str
    name: str
    passed: bool
    problems: list[str]


def run_file(path: Path, policy_dir: Path,
             header_certs: Callable[[Headers], tuple[ForwardedCert, ...]] | None = None) -> list[CaseResult]:
    """Run one test file's cases against ``policy_dir`` and a throwaway store seeded
    from its fixtures; ``header_certs`` reads certificates forwarded in case headers
    (``authz.adapters.client_certs.from_headers``)."""
    spec = _read(path)
    with tempfile.TemporaryDirectory(prefix="authz-policy-test-") as tmp:
        store = open_store(Path(tmp) / "test.db", last_used_interval=3600)
        store.migrate()
        try:
            secrets = _seed(store, spec.get("fixtures", {}), policy_dir)
        except KeyError as exc:
            raise BadTestFile(f"{path}: a fixture lacks {exc}") from None
        except (TypeError, ValueError) as exc:  # a malformed key file, an invalid name or scope…
            raise BadTestFile(f"{path}: bad fixture: {exc}") from None
        engine = DecisionEngine(load_policy(policy_dir, Context(store=store)))
        results = []
        for index, case in enumerate(spec.get("cases", [])):
            name = case.get("name") or f"case {index}"
            try:
                request = CheckRequest.from_json(_fill(case["request"], secrets), header_certs=header_certs)
                decision = engine.decide(request)
                got = decision.to_json()
                got["principal"] = decision.principal.id if decision.principal else None
                if not isinstance(case.get("expect", {}), dict):
                    raise InvalidBody("'expect' must be an object")
            except (BadRequest, KeyError) as exc:  # InvalidBody is a BadRequest
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


def _read(path: Path) -> dict:
    """The test file, shaped as documented above, or ``BadTestFile``."""
    try:
        spec = json.loads(path.read_text())
    except ValueError as exc:  # UnicodeDecodeError is one too
        raise BadTestFile(f"{path}: not JSON: {exc}") from None
    fixtures = spec.get("fixtures", {}) if isinstance(spec, dict) else None
    if not isinstance(fixtures, dict) or not _objects(spec.get("cases", [])) or not all(
            _objects(entries) for entries in fixtures.values()):
        raise BadTestFile(f"{path}: expected {{\"fixtures\": {{KIND: [objects]}}, \"cases\": [objects]}}")
    return spec


def _objects(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, dict) for item in value)


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
    from cryptography.hazmat.primitives import serialization

    from authz.credentials import devpki

    ca_key = serialization.load_pem_private_key(
        (policy_dir / spec.get("ca_key_file", "tests/keys/dev-mesh-ca.key")).read_bytes(), password=None)
    ca = x509.load_pem_x509_certificate((policy_dir / spec.get("ca_cert_file", "keys/dev-mesh-ca.pem")).read_bytes())
    now = dt.datetime.now(dt.UTC)
    leaf = devpki.issue(spec["name"], devpki.Issued(ca, ca_key), uris=[spec["uri"]],  # type: ignore[arg-type]
                        not_before=now - dt.timedelta(minutes=5), not_after=now + dt.timedelta(hours=1))
    return leaf.pem.decode(), leaf.der


def _fill(value, secrets):
    if isinstance(value, str):
        return _PLACEHOLDER.sub(lambda m: secrets[(m.group(1), m.group(2))], value)
    if isinstance(value, dict):
        return {k: _fill(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, secrets) for v in value]
    return value
