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
from dataclasses import dataclass
from pathlib import Path

from authz import passwords
from authz.adapters.api import InvalidBody, describe
from authz.authenticators import Context
from authz.engine import DecisionEngine
from authz.policy.loader import load_policy
from authz.request import BadRequest
from authz.store import Store

_PLACEHOLDER = re.compile(r"\{\{(key|basic):([^}]+)\}\}")
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
        store = Store(Path(tmp) / "test.db", last_used_interval=3600)
        store.migrate()
        secrets = _seed(store, spec.get("fixtures", {}))
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
        return results


def _seed(store: Store, fixtures: dict) -> dict[tuple[str, str], str]:
    secrets: dict[tuple[str, str], str] = {}
    for user in fixtures.get("users", []):
        store.principals.add_user(user["name"], passwords.hash_password(user["password"]),
                                  user.get("scopes", ()), user.get("roles", ()))
        basic = base64.b64encode(f"{user['name']}:{user['password']}".encode()).decode()
        secrets[("basic", user["name"])] = f"Basic {basic}"
    for key in fixtures.get("keys", []):
        _, secret = store.keys.create(key["principal"], key.get("scopes", ()), key.get("env", "live"),
                                      key.get("allow_ips", ()))
        secrets[("key", key["name"])] = secret
    return secrets


def _fill(value, secrets):
    if isinstance(value, str):
        return _PLACEHOLDER.sub(lambda m: secrets[(m.group(1), m.group(2))], value)
    if isinstance(value, dict):
        return {k: _fill(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, secrets) for v in value]
    return value
