"""API keys: format, placement, every refusal reason, rotation and last use."""

import ipaddress
import re
import time

import pytest

from authz.admin import Admin
from authz.credentials import apikeys
from authz.decision import Reason
from authz.request import CheckRequest
from authz.store import StoreError
from tests.conftest import engine_for, write_policy


def test_key_format_has_256_bits_and_only_a_hash_is_stored(store):
    record, key = Admin(store).keys.create("partner-a", ["orders:read"], env="test")
    assert re.fullmatch(r"sk_test_[0-9A-Za-z]{43}", key)
    assert 43 * 5.954 >= 256  # log2(62) ≈ 5.954 bits per character
    dump = repr(store.dump("api_keys"))  # every column of every row, on any backend
    assert key not in dump and key[8:] not in dump
    assert apikeys.fingerprint(key) in dump
    assert record.display == f"sk_test_{key[8:12]}…{key[-4:]}"
    assert len({apikeys.generate("live") for _ in range(200)}) == 200


@pytest.fixture
def decide(store, policy_dir):
    def decide(headers, authenticator=None, query="", client_ip="198.51.100.7"):
        write_policy(policy_dir, {
            "authenticators": {"key": authenticator or {"type": "api_key"}},
            "routes": [{"id": "r", "require": "key"}],
        })
        engine = engine_for(store, policy_dir)
        target = "/x" + (f"?{query}" if query else "")
        return engine.decide(CheckRequest.build("GET", target, "h", headers=headers,
                                                client_ip=ipaddress.ip_address(client_ip)))

    return decide


def test_placements(store, decide):
    _, key = Admin(store).keys.create("partner-a")
    assert decide({"X-API-Key": key}).allowed
    assert decide({"Authorization": f"ApiKey {key}"}).allowed
    assert decide({"authorization": f"apikey {key}"}).allowed
    assert decide({"X-API-Key": key, "Authorization": f"ApiKey {key}"}).allowed


def test_query_only_when_allowed(store, decide):
    _, key = Admin(store).keys.create("partner-a")
    assert decide({}, query=f"api_key={key}").reason == Reason.CREDENTIALS_MISSING
    assert decide({}, {"type": "api_key", "allow_query": True}, query=f"a=1&api_key={key}").allowed


def test_custom_header(store, decide):
    _, key = Admin(store).keys.create("partner-a")
    assert decide({"X-Partner-Key": key}, {"type": "api_key", "header": "X-Partner-Key"}).allowed


def test_identity(store, decide):
    record, key = Admin(store).keys.create("partner-a", ["orders:read", "orders:write"])
    d = decide({"X-API-Key": key})
    identity = d.principal
    assert (identity.id, identity.kind, identity.method, identity.credential) == (
        "partner-a", "client", "api_key", record.id)
    assert identity.scopes == {"orders:read", "orders:write"}


def test_key_of_a_user_acts_as_that_user(store, decide):
    store.principals.add_user("alice", None)
    _, key = Admin(store).keys.create("alice")
    assert decide({"X-API-Key": key}).principal.kind == "user"


@pytest.mark.parametrize(("value", "detail"), [
    ("sk_live_" + "A" * 42, "malformed API key"),
    ("sk_prod_" + "A" * 43, "malformed API key"),
    ("sk_live_" + "A" * 43, "unknown API key"),
    ("x" * 500, "malformed API key"),
])
def test_invalid_keys(decide, value, detail):
    d = decide({"X-API-Key": value})
    assert (d.status, d.reason, d.detail) == (401, Reason.CREDENTIALS_INVALID, detail)
    assert d.challenges == ['ApiKey realm="key"']


def test_two_different_keys_are_refused(store, decide):
    _, a = Admin(store).keys.create("a")
    _, b = Admin(store).keys.create("b")
    d = decide({"X-API-Key": a, "Authorization": f"ApiKey {b}"})
    assert d.reason == Reason.CREDENTIALS_INVALID and "different" in d.detail


def test_revoked_expired_and_disabled(store, decide):
    record, key = Admin(store).keys.create("partner-a")
    Admin(store).keys.revoke(record.id)
    assert decide({"X-API-Key": key}).reason == Reason.CREDENTIAL_REVOKED

    record, key = Admin(store).keys.create("partner-b", expires_at=time.time() + 0.3)
    assert decide({"X-API-Key": key}).allowed
    time.sleep(0.35)
    d = decide({"X-API-Key": key})
    assert (d.status, d.reason) == (401, Reason.CREDENTIAL_EXPIRED)

    _, key = Admin(store).keys.create("partner-c")
    store.principals.set_disabled("partner-c")
    assert decide({"X-API-Key": key}).reason == Reason.CREDENTIAL_REVOKED


def test_environments(store, decide):
    _, test_key = Admin(store).keys.create("partner-a", env="test")
    _, live_key = Admin(store).keys.create("partner-a", env="live")
    live_only = {"type": "api_key", "environments": ["live"]}
    d = decide({"X-API-Key": test_key}, live_only)
    assert (d.reason, d.detail) == (Reason.CREDENTIALS_INVALID, "test keys are not accepted here")
    assert decide({"X-API-Key": live_key}, live_only).allowed


def test_ip_allowlist(store, decide):
    _, key = Admin(store).keys.create("partner-a", allow_ips=["203.0.113.0/24", "2001:db8::/32"])
    assert decide({"X-API-Key": key}, client_ip="203.0.113.9").allowed
    assert decide({"X-API-Key": key}, client_ip="2001:db8::5").allowed
    assert decide({"X-API-Key": key}, client_ip="::ffff:203.0.113.9").allowed
    d = decide({"X-API-Key": key}, client_ip="198.51.100.7")
    assert (d.status, d.reason) == (401, Reason.IP_NOT_ALLOWED)


def test_rotation_keeps_old_key_for_the_grace_period(store, decide):
    old, old_key = Admin(store).keys.create("partner-a", ["orders:read"], allow_ips=["198.51.100.0/24"],
                                     expires_at=time.time() + 86400)
    old_after, new, new_key = Admin(store).keys.rotate(old.id, grace_seconds=0.4)
    old, old_after, new = old.to_json(), old_after.to_json(), new.to_json()  # as `authz keys --json` shows them
    assert old_after["status"] == "deprecated" and old_after["replaced_by"] == new["id"]
    assert new["rotated_from"] == old["id"] and new["scopes"] == ["orders:read"]
    assert new["allow_ips"] == ["198.51.100.0/24"]
    assert new["expires_at"] - new["created_at"] == pytest.approx(86400, abs=2)
    assert decide({"X-API-Key": old_key}).allowed
    assert decide({"X-API-Key": new_key}).allowed
    time.sleep(0.45)
    assert decide({"X-API-Key": old_key}).reason == Reason.CREDENTIAL_EXPIRED
    assert decide({"X-API-Key": new_key}).allowed
    with pytest.raises(StoreError, match="already rotated"):
        Admin(store).keys.rotate(old["id"], 10)


def test_several_active_keys_per_principal(store, decide):
    _, a = Admin(store).keys.create("partner-a")
    _, b = Admin(store).keys.create("partner-a")
    assert decide({"X-API-Key": a}).allowed and decide({"X-API-Key": b}).allowed


@pytest.mark.sqlite_only("counts the UPDATE statements SQLite runs")
def test_last_used_is_batched(store, decide):
    record, key = Admin(store).keys.create("partner-a")
    writes = []
    store.database.db.conn.set_trace_callback(writes.append)
    for _ in range(20):
        assert decide({"X-API-Key": key}).allowed
    store.database.db.conn.set_trace_callback(None)
    assert not [w for w in writes if w.lstrip().upper().startswith("UPDATE")]
    deadline = time.time() + 5
    while Admin(store).keys.get(record.id).last_used_at is None and time.time() < deadline:
        time.sleep(0.02)
    assert Admin(store).keys.get(record.id).last_used_at == pytest.approx(time.time(), abs=5)


def test_bad_input_changes_nothing(store):
    for bad in (dict(allow_ips=["10.0.0.0/33"]), dict(scopes=["has space"]), dict(env="prod"),
                dict(expires_at=time.time() - 1)):
        with pytest.raises(StoreError):
            Admin(store).keys.create("partner-z", **bad)
    assert Admin(store).keys.list() == [] and store.principals.list() == []
