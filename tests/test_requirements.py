"""The three-outcome semantics of requirement trees (docs/contract.md, "Requirements").

Each authenticator reports absent / invalid / valid; ``any`` takes the first satisfied
child and stops on an invalid one; ``all`` needs every child; constraints unmet on a
valid identity give 403.
"""

import base64

import pytest

from authz.admin import Admin
from authz.decision import IdentityKind, Reason
from authz.request import CheckRequest
from tests.conftest import add_user, engine_for, write_policy

AUTHENTICATORS = {
    "key": {"type": "api_key"},
    "staff": {"type": "basic", "realm": "staff"},
    "public": {"type": "anonymous"},
}


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def setup(store, policy_dir):
    add_user(store, "alice", "alice-pw", scopes=["orders:read"], roles=["approver"])
    _, key = Admin(store).keys.create("partner-a", ["orders:read", "orders:write"])
    _, narrow = Admin(store).keys.create("partner-b", ["orders:read"])

    def decide(require, headers=None, method="GET"):
        write_policy(policy_dir, {"authenticators": AUTHENTICATORS,
                                  "routes": [{"id": "r", "require": require}]})
        engine = engine_for(store, policy_dir)
        return engine.decide(CheckRequest.build(method, "/x", "h", headers=headers or {}))

    return decide, key, narrow


def test_any_first_satisfied_wins(setup):
    decide, key, _ = setup
    d = decide({"any": ["key", "staff"]}, {"X-API-Key": key, "Authorization": basic("alice", "alice-pw")})
    assert d.allowed and d.methods == ["api_key"] and d.principal.id == "partner-a"
    d = decide({"any": ["key", "staff"]}, {"Authorization": basic("alice", "alice-pw")})
    assert d.allowed and d.methods == ["basic"] and d.principal.id == "alice"


def test_any_invalid_stops_without_fall_through(setup):
    decide, _, _ = setup
    # A wrong key must not be rescued by a valid password behind it.
    d = decide({"any": ["key", "staff"]},
               {"X-API-Key": "sk_live_" + "A" * 43, "Authorization": basic("alice", "alice-pw")})
    assert (d.status, d.reason) == (401, Reason.CREDENTIALS_INVALID)
    assert d.challenges[0] == 'ApiKey realm="key"'
    assert 'Basic realm="staff", charset="UTF-8"' in d.challenges


def test_any_all_absent_is_missing_with_every_challenge(setup):
    decide, _, _ = setup
    d = decide({"any": ["key", "staff"]})
    assert (d.status, d.reason) == (401, Reason.CREDENTIALS_MISSING)
    assert d.challenges == ['ApiKey realm="key"', 'Basic realm="staff", charset="UTF-8"']


def test_any_forbidden_child_then_absent_is_403(setup):
    decide, _, narrow = setup
    d = decide({"any": [{"use": "key", "scopes": ["orders:write"]}, "staff"]}, {"X-API-Key": narrow})
    assert (d.status, d.reason) == (403, Reason.INSUFFICIENT_SCOPE)
    assert "orders:write" in d.detail and d.challenges == []


def test_any_forbidden_child_then_satisfied_allows(setup):
    decide, _, narrow = setup
    d = decide({"any": [{"use": "key", "scopes": ["orders:write"]}, "staff"]},
               {"X-API-Key": narrow, "Authorization": basic("alice", "alice-pw")})
    assert d.allowed and d.principal.id == "alice"


def test_all_combines_identities(setup):
    decide, key, _ = setup
    d = decide({"all": [{"use": "key", "scopes": ["orders:write"]}, {"use": "staff", "roles": ["approver"]}]},
               {"X-API-Key": key, "Authorization": basic("alice", "alice-pw")})
    assert d.allowed and d.methods == ["api_key", "basic"]
    assert d.principal.id == "alice"  # the user wins over the client
    assert d.layer(IdentityKind.CLIENT).id == "partner-a"
    assert d.scopes == ["orders:read", "orders:write"]


def test_all_with_one_absent_is_401_naming_only_the_missing(setup):
    decide, key, _ = setup
    d = decide({"all": ["key", "staff"]}, {"X-API-Key": key})
    assert (d.status, d.reason) == (401, Reason.CREDENTIALS_MISSING)
    assert d.challenges == ['Basic realm="staff", charset="UTF-8"']


def test_all_with_one_invalid_is_401_invalid(setup):
    decide, key, _ = setup
    d = decide({"all": ["key", "staff"]}, {"X-API-Key": key, "Authorization": basic("alice", "nope")})
    assert (d.status, d.reason) == (401, Reason.CREDENTIALS_INVALID)


def test_all_with_one_forbidden_is_403(setup):
    decide, key, _ = setup
    d = decide({"all": ["key", {"use": "staff", "roles": ["admin"]}]},
               {"X-API-Key": key, "Authorization": basic("alice", "alice-pw")})
    assert (d.status, d.reason) == (403, Reason.PRINCIPAL_NOT_ALLOWED)


def test_principal_globs(setup):
    decide, key, _ = setup
    assert decide({"use": "key", "principals": ["partner-*"]}, {"X-API-Key": key}).allowed
    d = decide({"use": "key", "principals": ["other-*", "bob"]}, {"X-API-Key": key})
    assert (d.status, d.reason) == (403, Reason.PRINCIPAL_NOT_ALLOWED)


def test_roles_need_one_of_them(setup):
    decide, _, _ = setup
    auth = {"Authorization": basic("alice", "alice-pw")}
    assert decide({"use": "staff", "roles": ["admin", "approver"]}, auth).allowed
    assert decide({"use": "staff", "roles": ["admin"]}, auth).reason == Reason.PRINCIPAL_NOT_ALLOWED


def test_anonymous_has_no_principal(setup):
    decide, _, _ = setup
    d = decide("public")
    assert d.allowed and d.methods == ["anonymous"] and d.principal is None
    d = decide({"any": ["key", "public"]})
    assert d.allowed and d.methods == ["anonymous"]


def test_credential_nobody_owns_is_invalid_not_missing(setup):
    decide, _, _ = setup
    d = decide("key", {"Authorization": "Bearer some.jwt.value"})
    assert (d.status, d.reason) == (401, Reason.CREDENTIALS_INVALID)
    assert "Authorization" in d.detail
    d = decide("staff", {"X-API-Key": "whatever"})
    assert (d.status, d.reason) == (401, Reason.CREDENTIALS_INVALID)


def test_same_authenticator_in_two_leaves_runs_once(setup, monkeypatch):
    decide, key, _ = setup
    from authz.authenticators.api_key import ApiKeyAuthenticator

    calls = []
    original = ApiKeyAuthenticator.authenticate
    monkeypatch.setattr(ApiKeyAuthenticator, "authenticate",
                        lambda self, req: calls.append(1) or original(self, req))
    d = decide({"any": [{"use": "key", "scopes": ["admin"]}, {"use": "key", "scopes": ["orders:read"]}]},
               {"X-API-Key": key})
    assert d.allowed and len(calls) == 1


def test_authenticator_exception_is_a_500_deny(setup, monkeypatch):
    decide, key, _ = setup
    from authz.authenticators.api_key import ApiKeyAuthenticator

    def boom(self, request):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(ApiKeyAuthenticator, "authenticate", boom)
    d = decide("key", {"X-API-Key": key})
    assert (d.allowed, d.status, d.reason) == (False, 500, Reason.INTERNAL_ERROR)
