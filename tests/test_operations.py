"""Operating authz: `policy check` warnings and exit codes, `policy explain` for every
deny reason, `"explain": true`, and `policy test` (the example policies' tests too)."""

import json

import pytest
from click.testing import CliRunner

from authz.admin import Admin
from authz.cli import main
from tests.conftest import ROOT, write_policy

pytestmark = pytest.mark.both_stores


def cli(*args, db=None):
    prefix = ["--db", str(db)] if db else []
    return CliRunner().invoke(main, [*prefix, *args])


def test_check_warnings_and_exit_codes(policy_dir):
    write_policy(policy_dir, {
        "authenticators": {"key": {"type": "api_key", "allow_query": True}, "unused": {"type": "basic"},
                           "public": {"type": "anonymous"}},
        "routes": [
            {"id": "all-orders", "match": {"paths": ["/orders/**"]}, "require": "key"},
            {"id": "one-order", "match": {"paths": ["/orders/*"], "methods": ["GET"]}, "require": "key"},
            {"id": "docs", "match": {"hosts": ["api.example.com"], "paths": ["/docs"]}, "require": "public"},
        ]})
    result = cli("policy", "check", str(policy_dir))
    assert result.exit_code == 0
    out = result.output
    assert "/routes/1: route 'one-order' can never match: route 'all-orders'" in out
    assert "/authenticators/unused: authenticator 'unused' is never used" in out
    assert "/authenticators/key/allow_query: API keys in the query string" in out
    assert "anonymous route 'docs' on host api.example.com" in out
    assert cli("policy", "check", str(policy_dir), "--strict").exit_code == 2
    body = json.loads(cli("policy", "check", str(policy_dir), "--json").output)
    assert body["ok"] and len(body["warnings"]) == 4
    (policy_dir / "broken.json").write_text("{")
    assert cli("policy", "check", str(policy_dir)).exit_code == 1


def test_example_policies_check_clean_of_errors():
    assert cli("policy", "check", str(ROOT / "policies")).exit_code == 0


def test_example_policy_tests_pass():
    result = cli("policy", "test", "--policy-dir", str(ROOT / "policies"))
    assert result.exit_code == 0, result.output
    assert "0 failed" in result.output and "FAIL" not in result.output


def test_policy_test_fails_on_a_broken_expectation(tmp_path):
    tests = tmp_path / "t.json"
    tests.write_text(json.dumps({"cases": [
        {"name": "wrong", "request": {"method": "GET", "url": "https://h/healthz"},
         "expect": {"decision": "deny", "reason": "no_route"}}]}))
    result = cli("policy", "test", str(tests), "--policy-dir", str(ROOT / "policies"))
    assert result.exit_code == 1
    assert "FAIL" in result.output and "decision: expected 'deny', got 'allow'" in result.output


@pytest.fixture
def explain_db(store, policy_dir):
    from authz.credentials import passwords

    write_policy(policy_dir, json.loads((ROOT / "policies" / "api.json").read_text()))
    store.principals.add_user("bob", passwords.hash_password("pw"), roles=["clerk"])
    return store


@pytest.mark.parametrize(("args", "line"), [
    (["GET", "https://h/nope"], "DENY (403 no_route): No route in the policy matches"),
    (["GET", "https://h/v1/orders"], "DENY (401 credentials_missing): The route needs a credential"),
    (["GET", "https://h/v1/orders", "-H", "X-API-Key: nonsense"],
     "DENY (401 credentials_invalid): A credential was presented but it is wrong"),
    (["GET", "https://h/admin/x", "--as-user", "bob"],
     "DENY (403 principal_not_allowed): The caller is known but is not one the route admits"),
    (["GET", "https://h/v1/%2e%2e/%2e%2e/x"], None),
])
def test_explain_names_the_cause(explain_db, policy_dir, args, line):
    result = cli("policy", "explain", *args, "--policy-dir", str(policy_dir), db=explain_db.url)
    if line is None:
        assert result.exit_code != 0 and "ambiguous request target" in result.output
        return
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("decision: " + line)


def test_explain_dry_run_key_applies_every_check(explain_db, policy_dir):
    record, _ = Admin(explain_db).keys.create("partner-a", ["orders:read"])
    ok = cli("policy", "explain", "GET", "https://h/v1/orders", "--as-key", record.id, "--policy-dir",
             str(policy_dir), db=explain_db.url)
    assert "decision: ALLOW (200) as partner-a" in ok.output
    Admin(explain_db).keys.revoke(record.id)
    revoked = cli("policy", "explain", "GET", "https://h/v1/orders", "--as-key", record.id, "--policy-dir",
                  str(policy_dir), "--json", db=explain_db.url)
    body = json.loads(revoked.output)
    assert body["reason"] == "credential_revoked"
    assert body["explain"]["requirement"][0]["outcome"] == "invalid"
    assert body["explain"]["routes"][-1] == {"id": "orders-read", "file": str(policy_dir / "policy.json"),
                                             "matched": True, "why": None}


def test_decisions_api_explain(store, make_client):
    client = make_client(json.loads((ROOT / "policies" / "api.json").read_text()))
    body = client.post("/v1/decisions", json={"method": "DELETE", "url": "https://h/v1/orders/1",
                                              "explain": True}).get_json()
    assert body["reason"] == "credentials_missing"
    assert [r["matched"] for r in body["explain"]["routes"]] == [False, False, True]
    assert body["explain"]["summary"].startswith("DENY (401 credentials_missing)")


@pytest.mark.parametrize("profile", ["internal-tool", "public-api", "partner", "mobile-spa", "microservices",
                                     "zero-trust"])
def test_policy_init_profiles_pass_their_own_tests(tmp_path, profile):
    directory = tmp_path / profile
    result = cli("policy", "init", "--profile", profile, str(directory))
    assert result.exit_code == 0, result.output
    assert cli("policy", "check", str(directory)).exit_code == 0
    tested = cli("policy", "test", "--policy-dir", str(directory), "--json")
    assert tested.exit_code == 0, tested.output
    body = json.loads(tested.output)
    assert body["failed"] == 0 and body["passed"] >= 3
    again = cli("policy", "init", "--profile", profile, str(directory))
    assert again.exit_code == 1 and "exists already" in again.output


@pytest.mark.parametrize("reason", list(__import__("authz.decision", fromlist=["Reason"]).Reason))
def test_every_deny_reason_has_a_plain_cause(reason):
    from authz.decision import Decision
    from authz.engine.explain import summary

    line = summary(Decision.deny(403, reason, "the detail"))
    assert line.startswith(f"DENY (403 {reason}): ") and line.endswith("(the detail)")
    cause = line.split(": ", 1)[1].removesuffix(" (the detail)")
    assert len(cause) > 20 and cause.endswith(".") and "\n" not in line


def test_check_warns_about_a_cert_header(policy_dir, tmp_path):
    from tests.pki import Pki

    (policy_dir / "keys").mkdir(parents=True)
    (policy_dir / "keys" / "ca.pem").write_bytes(Pki().root.pem)
    write_policy(policy_dir, {
        "authenticators": {"mesh": {"type": "mtls", "ca_file": "keys/ca.pem", "cert_sources": ["api"],
                                    "cert_header": "X-Client-Cert"}},
        "routes": [{"id": "r", "require": "mesh"}]})
    result = cli("policy", "check", str(policy_dir))
    assert result.exit_code == 0
    assert "/authenticators/mesh/cert_header: X-Client-Cert is believed whatever cert_sources says" in result.output


def test_explain_runs_each_authenticator_once(store, policy_dir, make_client, monkeypatch):
    """One evaluation, traced: explain must not ask an authenticator a second time (its
    metrics and last-used stamps would double, and a second run may disagree)."""
    from authz.authenticators.api_key import ApiKeyAuthenticator
    from authz.authenticators.basic import BasicAuthenticator
    from authz.engine.explain import explain
    from authz.request import CheckRequest
    from tests.conftest import add_user, engine_for

    write_policy(policy_dir, {
        "authenticators": {"key": {"type": "api_key"}, "staff": {"type": "basic"}},
        "routes": [{"id": "both", "match": {"paths": ["/x/**"]},
                    "require": {"any": [{"use": "staff", "roles": ["admin"]}, {"use": "key"}]}}]})
    add_user(store, "bob", "pw", roles=["clerk"])
    _, secret = Admin(store).keys.create("partner-a", ["orders:read"])
    calls: list[str] = []
    for cls in (ApiKeyAuthenticator, BasicAuthenticator):
        real = cls.authenticate
        monkeypatch.setattr(cls, "authenticate", lambda self, request, real=real: calls.append(self.name)
                            or real(self, request))
    basic = "Basic " + __import__("base64").b64encode(b"bob:pw").decode()
    request = CheckRequest.build("GET", "/x/1", "h", headers={"Authorization": basic, "X-API-Key": secret})
    decision, explanation = explain(engine_for(store, policy_dir), request)
    assert sorted(calls) == ["key", "staff"]
    assert [leaf["state"] for leaf in explanation["requirement"]] == ["forbidden", "satisfied"]
    assert decision.allowed and explanation["summary"].startswith("ALLOW (200) as partner-a")
    calls.clear()
    client = make_client()
    body = client.post("/v1/decisions", json={"url": "https://h/x/1", "explain": True,
                                              "headers": {"Authorization": basic, "X-API-Key": secret}}).get_json()
    assert sorted(calls) == ["key", "staff"] and body["decision"] == "allow"
