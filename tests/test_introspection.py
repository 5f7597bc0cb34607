"""The ``oauth2_introspection`` authenticator against a real RFC 7662 endpoint on
loopback: client authentication, active/inactive, caching, scopes after the cache,
audience, and an unreachable endpoint."""

import logging
import time

import pytest

from authz.decision import Reason
from authz.request import CheckRequest
from tests.conftest import engine_for, write_policy
from tests.idp import IdentityProvider


@pytest.fixture
def idp():
    provider = IdentityProvider()
    yield provider
    provider.stop()


@pytest.fixture
def decider(store, policy_dir, idp, monkeypatch):
    monkeypatch.setenv("AS_SECRET", idp.client_secret)

    def make(require="as_token", **options):
        config = {"type": "oauth2_introspection", "url": idp.url + "/introspect", "client_id": "authz",
                  "client_secret_env": "AS_SECRET", "realm": "api"}
        config.update(options)
        write_policy(policy_dir, {"authenticators": {"as_token": config},
                                  "routes": [{"id": "r", "require": require}]})
        engine = engine_for(store, policy_dir)

        def decide(token=None):
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            return engine.decide(CheckRequest.build("GET", "/x", headers=headers))

        return decide

    return make


def active(**fields):
    return {"active": True, "scope": "orders:read", "client_id": "web", "sub": "alice",
            "exp": int(time.time()) + 600, **fields}


@pytest.mark.parametrize("client_auth", ["client_secret_basic", "client_secret_post"])
def test_active_token(decider, idp, client_auth):
    idp.introspection["tok-1"] = active()
    d = decider(client_auth=client_auth)("tok-1")
    assert d.allowed and d.methods == ["oauth2_introspection"]
    assert [(i.id, str(i.kind)) for i in d.identities] == [("alice", "user"), ("web", "client")]
    assert d.principal.scopes == {"orders:read"}
    assert idp.auth_seen == [client_auth]


def test_client_credentials_token_is_the_client(decider, idp):
    idp.introspection["svc"] = active(sub=None, username=None)
    d = decider()("svc")
    assert [(i.id, str(i.kind)) for i in d.identities] == [("web", "client")]


def test_inactive_and_unknown_tokens(decider, idp):
    idp.introspection["old"] = {"active": False}
    decide = decider()
    for token in ("old", "never-issued"):
        d = decide(token)
        assert (d.status, d.reason, d.detail) == (401, Reason.CREDENTIALS_INVALID, "token is not active")
        assert d.challenges == ['Bearer realm="api", error="invalid_token", error_description="token is not active"']


def test_answers_are_cached_positive_and_negative(decider, idp):
    idp.introspection["tok"] = active()
    decide = decider(max_ttl=60, negative_ttl=60)
    for _ in range(5):
        assert decide("tok").allowed
        assert not decide("bad").allowed
    assert idp.hits["/introspect"] == 2


def test_cache_never_outlives_exp_or_max_ttl(decider, idp):
    idp.introspection["short"] = active(exp=int(time.time()) + 2)
    idp.introspection["long"] = active()
    decide = decider(max_ttl=1)
    assert decide("short").allowed and decide("long").allowed
    time.sleep(2.1)
    assert decide("short").reason == Reason.CREDENTIAL_EXPIRED
    idp.introspection["long"] = {"active": False}  # revoked at the AS
    assert decide("long").reason == Reason.CREDENTIALS_INVALID


def test_scopes_are_checked_after_the_cache(decider, idp):
    idp.introspection["tok"] = active(scope="orders:read")
    decide = decider(require={"use": "as_token", "scopes": ["orders:write"]})
    for _ in range(2):
        d = decide("tok")
        assert (d.status, d.reason) == (403, Reason.INSUFFICIENT_SCOPE)
        assert d.challenges == ['Bearer realm="api", error="insufficient_scope", scope="orders:write"']
    assert idp.hits["/introspect"] == 1


def test_audience(decider, idp):
    idp.introspection["ours"] = active(aud=["https://api.example.com", "x"])
    idp.introspection["theirs"] = active(aud="https://other.example.com")
    decide = decider(audience="https://api.example.com")
    assert decide("ours").allowed
    assert decide("theirs").detail == "token audience is not accepted here"


def test_wrong_client_secret_is_an_upstream_failure(decider, idp, monkeypatch):
    idp.client_secret = "rotated"
    d = decider()("tok")
    assert (d.status, d.reason) == (500, Reason.UPSTREAM_UNAVAILABLE)


def test_unreachable_endpoint_denies_and_logs_without_the_token(decider, idp, caplog):
    decide = decider(timeout=0.5)
    idp.stop()
    with caplog.at_level(logging.WARNING, logger="authz.introspection"):
        d = decide("secret-token-value")
    assert (d.allowed, d.status, d.reason) == (False, 500, Reason.UPSTREAM_UNAVAILABLE)
    assert d.challenges == []
    assert any("introspection at" in r.getMessage() for r in caplog.records)
    assert "secret-token-value" not in caplog.text


def test_tokens_are_not_kept_in_memory(decider, idp, store):
    from authz.authenticators.base import Context  # noqa: F401

    idp.introspection["a-very-recognisable-token"] = active()
    decide = decider()
    assert decide("a-very-recognisable-token").allowed
    engine_caches = [c for c in __import__("gc").get_objects() if type(c).__name__ == "TTLCache"]
    for cache in engine_caches:
        for key in list(cache._entries):
            assert b"a-very-recognisable-token" not in (key if isinstance(key, bytes) else b"")
            assert "a-very-recognisable-token" not in repr(key)


def test_malformed_bearer(decider):
    d = decider()("bad\x01token")
    assert d.reason == Reason.CREDENTIALS_INVALID
