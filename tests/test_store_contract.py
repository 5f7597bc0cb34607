"""The store contract: what every backend must do, written against ``authz.store.interface``
and the admin library only (no SQL, no backend class). Each test runs on every backend
``open_store`` knows: SQLite (a file, a URL, memory) and PostgreSQL (a fresh database on
the session's throwaway server, tests/pg.py)."""

from __future__ import annotations

import time

import pytest

from authz.admin import Admin
from authz.admin.policy_snapshots import KEEP, save_snapshot
from authz.admin.revocations import revoke
from authz.credentials import apikeys, passwords
from authz.store import Store, StoreError, StoreUnavailable, open_store
from authz.store.interface import ANY_ISSUER

FP = "ab" * 32
ISSUER_DN = "CN=Mesh CA,O=Corp"


def _file(tmp_path) -> str:
    return str(tmp_path / "contract.db")


def _file_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'contract.db'}"  # sqlite:////absolute


POSTGRESQL = "postgresql"  # its URL comes from the pg_url fixture
BACKENDS = {"sqlite-file": _file, "sqlite-url": _file_url, "sqlite-memory": lambda tmp_path: ":memory:",
            POSTGRESQL: None}
# What needs the data to outlive one connection (a second handle, a new thread): files only.
FILE_BACKENDS = [name for name in BACKENDS if name != "sqlite-memory"]


def _migrated(url: str) -> Store:
    s = open_store(url, last_used_interval=3600)  # flushed by hand here
    s.migrate()
    return s


def _url(request, tmp_path) -> str:
    if request.param == POSTGRESQL:
        return request.getfixturevalue("pg_url")
    return BACKENDS[request.param](tmp_path)


@pytest.fixture(params=list(BACKENDS))
def store(request, tmp_path) -> Store:
    return _migrated(_url(request, tmp_path))


@pytest.fixture(params=FILE_BACKENDS)
def file_store(request, tmp_path) -> Store:
    return _migrated(_url(request, tmp_path))


@pytest.fixture
def admin(store) -> Admin:
    return Admin(store)


# -- opening, schema ------------------------------------------------------------------------

def test_open_store_urls(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert open_store("sqlite:///rel.db").location == "rel.db"
    assert open_store(f"sqlite:///{tmp_path}/abs.db").location == f"{tmp_path}/abs.db"
    assert open_store(tmp_path / "plain.db").location == str(tmp_path / "plain.db")
    assert open_store(":memory:").location == ":memory:"
    assert open_store("postgresql://authz:s3cret@db:5433/authz").location == "postgresql://authz:***@db:5433/authz"
    assert open_store("postgres://authz@db/authz").location == "postgres://authz@db/authz"
    assert open_store("postgresql://authz:s3cret@db:5433/authz").url == "postgresql://authz:s3cret@db:5433/authz"
    assert open_store(open_store("sqlite:///rel.db").url).location == "rel.db"  # url: what reopens it
    with pytest.raises(StoreError, match="'mysql'"):
        open_store("mysql://db/authz")


def test_migrate_is_idempotent_and_versioned(file_store):
    version = file_store.version()
    assert version >= 1
    assert file_store.migrate() == (version, version)
    file_store.check_ready()
    assert file_store.problem() is None


def test_a_missing_store_is_not_ready_and_not_created(tmp_path):
    missing = open_store(tmp_path / "missing.db")
    with pytest.raises(StoreError, match="authz db init"):
        missing.check_ready()
    assert not (tmp_path / "missing.db").exists()


def test_the_backend_is_chosen_only_by_open_store():
    import subprocess
    import sys

    code = ("import authz.store, authz.policy, sys; "
            "print('authz.store.sqlite' in sys.modules, 'authz.store.postgres' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False False"


def test_a_missing_postgresql_schema_says_run_db_init(pg_url):
    fresh = open_store(pg_url)
    with pytest.raises(StoreError, match="authz db init"):
        fresh.check_ready()
    assert fresh.version() == 0 and "authz db init" in fresh.problem()
    assert fresh.migrate() == (0, fresh.version())
    fresh.check_ready()


def test_an_unreachable_postgresql_fails_closed_without_its_password():
    from tests.conftest import free_port

    down = open_store(f"postgresql://authz:hunter2@127.0.0.1:{free_port()}/authz")
    with pytest.raises(StoreError) as caught:
        down.check_ready()
    assert "hunter2" not in str(caught.value) and "***" in str(caught.value)
    with pytest.raises(StoreUnavailable) as caught:
        down.keys.find(FP)
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in down.problem()


# -- API keys ------------------------------------------------------------------------------

def test_key_create_find_and_list(store, admin):
    record, secret = admin.keys.create("partner-a", ["orders:read", "orders:read"], "test",
                                       ["203.0.113.7/24"], time.time() + 60)
    assert apikeys.parse(secret) == "test" and record.display == apikeys.display(secret)
    match = store.keys.find(apikeys.fingerprint(secret))
    assert (match.id, match.principal, match.kind, match.env, match.status) == (
        record.id, "partner-a", "client", "test", "active")
    assert match.scopes == {"orders:read"} and match.allow_ips == "203.0.113.0/24"
    assert match.hash == apikeys.fingerprint(secret) and not match.principal_disabled
    assert store.keys.find(apikeys.fingerprint(apikeys.generate("test"))) is None
    assert store.keys.find_by_id(record.id) == match
    json = record.to_json()
    assert json["scopes"] == ["orders:read"] and json["allow_ips"] == ["203.0.113.0/24"]
    assert json["status"] == "active" and json["principal_kind"] == "client" and json["last_used_at"] is None
    assert [r.id for r in admin.keys.list()] == [record.id] == [r.id for r in admin.keys.list("partner-a")]
    assert admin.keys.list("nobody") == []


@pytest.mark.parametrize("bad", [dict(allow_ips=["10.0.0.0/33"]), dict(scopes=["has space"]), dict(env="prod"),
                                 dict(expires_at=1.0), dict(principal="-bad name")])
def test_key_bad_input_writes_nothing(store, admin, bad):
    with pytest.raises(StoreError):
        admin.keys.create(**{"principal": "partner-z", **bad})
    assert admin.keys.list() == [] and admin.users.list() == []


def test_key_revoke(store, admin):
    record, secret = admin.keys.create("partner-a")
    revoked = admin.keys.revoke(record.id)
    assert revoked.status == "revoked" and revoked.revoked_at == pytest.approx(time.time(), abs=5)
    assert admin.keys.revoke(record.id).revoked_at == revoked.revoked_at  # once
    assert store.keys.find(apikeys.fingerprint(secret)).status == "revoked"
    with pytest.raises(StoreError, match="no API key"):
        admin.keys.revoke("key_nope")


def test_key_rotate(store, admin):
    old, _ = admin.keys.create("partner-a", ["orders:read"], allow_ips=["198.51.100.0/24"],
                               expires_at=time.time() + 86400)
    old_after, new, secret = admin.keys.rotate(old.id, 60)
    assert (old_after.status, old_after.replaced_by, new.rotated_from) == ("deprecated", new.id, old.id)
    assert old_after.expires_at == pytest.approx(time.time() + 60, abs=5)
    assert (new.scopes, new.allow_ips, new.principal) == (old.scopes, old.allow_ips, "partner-a")
    assert new.expires_at - new.created_at == pytest.approx(86400, abs=2)
    assert store.keys.find(apikeys.fingerprint(secret)).id == new.id
    with pytest.raises(StoreError, match="already rotated"):
        admin.keys.rotate(old.id, 60)
    admin.keys.revoke(new.id)
    with pytest.raises(StoreError, match="is revoked"):
        admin.keys.rotate(new.id, 60)
    with pytest.raises(StoreError, match="negative"):
        admin.keys.rotate(new.id, -1)


def test_expired_key_shows_expired_and_cannot_rotate(store, admin):
    record, _ = admin.keys.create("partner-a", expires_at=time.time() + 0.2)
    time.sleep(0.25)
    assert admin.keys.get(record.id).to_json()["status"] == "expired"
    with pytest.raises(StoreError, match="has expired"):
        admin.keys.rotate(record.id, 60)


WRITING = {"orders:write": "route 'orders-write' in api.json requires it and admits POST"}


def test_publishable_key_create_find_list_and_rotate(store, admin):
    record, key = admin.keys.create("web-shop", ["orders:read"], "test", ["203.0.113.0/24"], publishable=True,
                                    origins=["https://Shop.example.com", "https://*.example.com:8443",
                                             "https://shop.example.com"], writing_scopes=WRITING)
    assert key.startswith("pk_test_") and apikeys.parse(key) == "test" and apikeys.is_publishable(key)
    assert record.display == apikeys.display(key) and record.display.startswith("pk_test_")
    origins = ("https://shop.example.com", "https://*.example.com:8443")  # lower-cased, without repeats
    assert (record.publishable, record.origins) == (True, origins)
    assert record.to_json()["publishable"] is True and record.to_json()["origins"] == list(origins)
    match = store.keys.find(apikeys.fingerprint(key))
    assert (match.id, match.publishable, match.origins, match.env) == (record.id, True, " ".join(origins), "test")
    assert store.keys.find_by_id(record.id) == match
    assert [(r.id, r.publishable, r.origins) for r in admin.keys.list("web-shop")] == [(record.id, True, origins)]
    _, new, new_key = admin.keys.rotate(record.id, 60)
    assert new_key.startswith("pk_test_") and (new.publishable, new.origins, new.scopes) == (True, origins,
                                                                                            ("orders:read",))
    assert store.keys.find(apikeys.fingerprint(new_key)).publishable


def test_secret_keys_are_not_publishable(store, admin):
    record, key = admin.keys.create("partner-a")
    assert key.startswith("sk_live_") and not apikeys.is_publishable(key)
    assert (record.publishable, record.origins) == (False, ())
    assert record.to_json()["publishable"] is False and record.to_json()["origins"] == []
    match = store.keys.find(apikeys.fingerprint(key))
    assert (match.publishable, match.origins) == (False, "")


@pytest.mark.parametrize(("bad", "message"), [
    (dict(publishable=True), "needs at least one origin"),
    (dict(publishable=True, origins=["https://shop.example.com/"]), "invalid origin 'https://shop.example.com/'"),
    (dict(origins=["https://shop.example.com"]), "publishable keys only"),
    (dict(publishable=True, origins=["https://shop.example.com"], scopes=["orders:read"]), "checked against"),
    (dict(publishable=True, origins=["https://shop.example.com"], scopes=["orders:read", "orders:write"],
          writing_scopes=WRITING), "scope 'orders:write' writes (route 'orders-write'"),
])
def test_publishable_bad_input_writes_nothing(store, admin, bad, message):
    with pytest.raises(StoreError) as caught:
        admin.keys.create(**{"principal": "web-shop", **bad})
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert admin.keys.list() == [] and admin.users.list() == []


def test_a_publishable_key_never_belongs_to_a_user(store, admin):
    admin.users.add("alice", "pw")
    with pytest.raises(StoreError, match="'alice' is a user"):
        admin.keys.create("alice", publishable=True, origins=["https://shop.example.com"])
    assert admin.keys.list() == []


def test_last_used_is_flushed_through_the_interface(store, admin):
    record, _ = admin.keys.create("partner-a")
    store.last_used.record(record.id)
    assert admin.keys.get(record.id).last_used_at is None  # nothing written per request
    store.last_used.flush()
    assert admin.keys.get(record.id).last_used_at == pytest.approx(time.time(), abs=5)
    store.keys.touch({record.id: 1.0})  # never moves back
    assert admin.keys.get(record.id).last_used_at == pytest.approx(time.time(), abs=5)


# -- API key usage ------------------------------------------------------------------------------

HOUR = 3600
T0 = int(time.time() // HOUR - 10) * HOUR  # an hour's start, within any retention


def test_usage_batches_add_up_per_key_and_hour(store, admin):
    from authz.store.records import KeyUsage

    a, _ = admin.keys.create("partner-a")
    b, _ = admin.keys.create("partner-b")
    store.usage.add([
        KeyUsage(a.id, ((T0, 5, 1), (T0 + HOUR, 2, 0)), (("203.0.113.0/24", T0 + 10, T0 + 20),),
                 T0 + HOUR + 5, True, "203.0.113.9", "orders"),
        KeyUsage(b.id, ((T0, 0, 3),), (), T0 + 30, False, None, None, after_rotation=3),
    ])
    store.usage.add([  # another worker's batch: summed, first sighting kept, the later request wins
        KeyUsage(a.id, ((T0 + HOUR, 1, 4),), (("203.0.113.0/24", T0 + 5, T0 + 15), ("2001:db8:1::/48", T0 + 7,
                                                                                      T0 + 7)),
                 T0 + 40, False, "2001:db8:1::2", "admin", after_rotation=2),
    ])
    assert [h.to_json() for h in store.usage.hours(a.id, T0)] == [
        {"hour": T0, "allowed": 5, "denied": 1}, {"hour": T0 + HOUR, "allowed": 3, "denied": 4}]
    assert [(h.hour, h.allowed) for h in store.usage.hours(a.id, T0 + HOUR + 1800)] == [(T0 + HOUR, 3)]
    assert store.usage.hours(a.id, T0 + 2 * HOUR) == [] and store.usage.hours("key_nope", 0) == []
    assert [n.to_json() for n in store.usage.networks(a.id)] == [
        {"network": "203.0.113.0/24", "first_seen": T0 + 5, "last_seen": T0 + 20},
        {"network": "2001:db8:1::/48", "first_seen": T0 + 7, "last_seen": T0 + 7}]
    last = store.usage.last_request(a.id)
    assert (last.at, last.allowed, last.client_ip, last.route, last.after_rotation) == (
        T0 + HOUR + 5, True, "203.0.113.9", "orders", 2)
    assert last.to_json() == {"at": T0 + HOUR + 5, "allowed": True, "client_ip": "203.0.113.9", "route": "orders"}
    assert store.usage.last_request("key_nope") is None
    everyone = store.usage.last_requests()
    assert sorted(everyone) == sorted([a.id, b.id]) and everyone[b.id].after_rotation == 3
    assert not everyone[b.id].allowed and everyone[b.id].client_ip is None


def test_usage_is_pruned_past_the_retention(store, admin):
    from authz.store.records import KeyUsage

    old, _ = admin.keys.create("partner-a")
    recent, _ = admin.keys.create("partner-b")
    store.usage.add([KeyUsage(old.id, ((T0, 1, 0), (T0 + 2 * HOUR, 1, 0)), (("198.51.100.0/24", T0, T0),),
                              T0 + 2 * HOUR, True, "198.51.100.1", "r"),
                     KeyUsage(recent.id, ((T0 + 2 * HOUR, 1, 0),), (("192.0.2.0/24", T0, T0 + 3 * HOUR),),
                              T0 + 3 * HOUR, True, "192.0.2.1", "r")])
    assert store.usage.prune(T0 + HOUR + 1) == 2  # the first hour, a network last seen in it
    assert [h.hour for h in store.usage.hours(old.id, 0)] == [T0 + 2 * HOUR]
    assert store.usage.networks(old.id) == [] and len(store.usage.networks(recent.id)) == 1
    assert store.usage.prune(T0 + 2 * HOUR + 1800) == 1  # its last request (the hour is the current one)
    assert store.usage.last_request(old.id) is None and store.usage.last_request(recent.id) is not None
    assert store.usage.prune(T0 + 2 * HOUR + 1800) == 0


def test_networks_kept_per_key_are_bounded(store, admin, monkeypatch):
    from authz.store import usage_rows
    from authz.store.records import KeyUsage

    monkeypatch.setattr(usage_rows, "MAX_NETWORKS", 2)
    key, _ = admin.keys.create("web-shop")

    def seen(*networks, at):
        store.usage.add([KeyUsage(key.id, ((T0, len(networks), 0),), tuple((n, at, at) for n in networks), at,
                                  True, None, "r")])

    seen("192.0.2.0/24", at=T0)
    seen("198.51.100.0/24", at=T0 + 1)
    seen("203.0.113.0/24", "192.0.2.0/24", at=T0 + 2)  # full: a new network is not kept, a known one goes on
    assert [(n.network, n.last_seen) for n in store.usage.networks(key.id)] == [
        ("192.0.2.0/24", T0 + 2), ("198.51.100.0/24", T0 + 1)]
    assert store.usage.hours(key.id, T0)[0].allowed == 4  # counted all the same


def test_the_recorder_counts_requests_and_writes_them_with_last_uses(store, admin):
    import ipaddress

    key, _ = admin.keys.create("partner-a")
    other, _ = admin.keys.create("partner-b")
    ip = ipaddress.ip_address
    recorder = store.last_used
    for address in ("203.0.113.7", "203.0.113.200", "::ffff:203.0.113.9"):
        recorder.count(key.id, True, ip(address), "orders", False)
    recorder.count(key.id, False, ip("2001:db8:5:6::1"), "admin", True)
    recorder.count(other.id, False, None, None, False)
    recorder.record(key.id)
    assert store.usage.hours(key.id, 0) == [] and admin.keys.get(key.id).last_used_at is None  # nothing per request
    recorder.flush()
    now = time.time()
    [hour] = store.usage.hours(key.id, now - HOUR)
    assert (hour.allowed, hour.denied) == (3, 1) and hour.hour == int(now // HOUR) * HOUR
    assert [n.network for n in store.usage.networks(key.id)] == ["203.0.113.0/24", "2001:db8:5::/48"]
    last = store.usage.last_request(key.id)
    assert (last.allowed, last.client_ip, last.route, last.after_rotation) == (False, "2001:db8:5:6::1", "admin", 1)
    assert admin.keys.get(key.id).last_used_at == pytest.approx(now, abs=5)
    assert [(h.allowed, h.denied) for h in store.usage.hours(other.id, 0)] == [(0, 1)]
    assert store.usage.networks(other.id) == []
    recorder.flush()  # written once
    assert store.usage.hours(key.id, 0)[0].allowed == 3


def test_the_recorder_hands_each_written_batch_to_after_write(store, admin):
    import ipaddress

    key, _ = admin.keys.create("partner-a")
    seen: list = []
    store.last_used.after_write = seen.append
    store.last_used.count(key.id, True, ipaddress.ip_address("203.0.113.7"), "orders", False)
    store.last_used.flush()
    [[usage]] = seen
    assert usage.key_id == key.id and store.usage.hours(key.id, 0)[0].allowed == 1  # written before


# -- API key anomalies ----------------------------------------------------------------------------

def _anomaly(key_id: str, kind: str, span: str, at: float):
    from authz.store.anomaly_rows import anomaly_id
    from authz.store.records import KeyAnomaly

    return KeyAnomaly(anomaly_id(key_id, kind, span), key_id, kind, span, at, f"{kind} of {key_id}")


def test_anomalies_are_stored_once_listed_and_acknowledged(store, admin):
    a, _ = admin.keys.create("partner-a")
    b, _ = admin.keys.create("partner-b")
    first = _anomaly(a.id, "new_network", "198.51.100.0/24", T0)
    assert store.anomalies.add(first)
    assert not store.anomalies.add(_anomaly(a.id, "new_network", "198.51.100.0/24", T0 + 60))  # the same one
    second = _anomaly(a.id, "volume", "hour", T0 + 10)
    other = _anomaly(b.id, "revoked_presented", "day", T0 + 20)
    assert store.anomalies.add(second) and store.anomalies.add(other)
    assert first.id.startswith("an_") and len({first.id, second.id, other.id}) == 3
    assert store.anomalies.get(first.id) == first and store.anomalies.get("an_nope") is None
    assert store.anomalies.since(T0 + 5) == [other, second]  # newest first
    assert store.anomalies.open(a.id) == [first, second]
    assert store.anomalies.ack(first.id, T0 + 30) and not store.anomalies.ack(first.id, T0 + 40)
    assert not store.anomalies.ack("an_nope", T0)
    assert store.anomalies.get(first.id).acked_at == T0 + 30
    assert store.anomalies.open(a.id) == [second] and len(store.anomalies.since(0)) == 3
    assert not store.anomalies.add(first)  # acknowledged, still raised for its span


def test_a_key_refused_on_anomaly_reads_its_open_anomaly_with_the_lookup(store, admin):
    from authz.credentials import apikeys

    guarded, guarded_secret = admin.keys.create("partner-a", on_anomaly="deny")
    reported, reported_secret = admin.keys.create("partner-b")
    assert (guarded.on_anomaly, reported.on_anomaly) == ("deny", "allow")
    find = store.keys.find

    def open_anomaly(secret: str) -> str | None:
        return find(apikeys.fingerprint(secret)).open_anomaly

    logged = store.changes.latest()
    raised = _anomaly(guarded.id, "new_network", "198.51.100.0/24", T0)
    store.anomalies.add(raised)
    assert store.changes.latest() > logged  # replicas re-read the key
    logged = store.changes.latest()
    store.anomalies.add(_anomaly(reported.id, "new_network", "198.51.100.0/24", T0))
    assert store.changes.latest() == logged  # a key only reported: nothing a replica serves changed
    assert open_anomaly(guarded_secret) == f"new_network {raised.id}"
    assert open_anomaly(reported_secret) is None
    assert store.keys.find_by_id(guarded.id).open_anomaly == f"new_network {raised.id}"
    store.anomalies.ack(raised.id, T0 + 1)
    assert open_anomaly(guarded_secret) is None and store.changes.latest() > logged
    assert admin.keys.set_on_anomaly(reported.id, "deny").on_anomaly == "deny"
    assert open_anomaly(reported_secret).startswith("new_network an_")
    with pytest.raises(StoreError, match="no API key with id 'key_nope'"):
        admin.keys.set_on_anomaly("key_nope", "deny")
    with pytest.raises(StoreError, match="on-anomaly must be one of allow, deny"):
        admin.keys.create("partner-c", on_anomaly="block")
    _, successor, _ = admin.keys.rotate(reported.id, 3600)
    assert successor.on_anomaly == "deny"  # a rotation keeps the choice


# -- principals and users ---------------------------------------------------------------------

def test_users_add_passwd_disable(store, admin):
    admin.users.add("alice", "pw-1", ["orders:read"], ["clerk"])
    user = store.principals.find_user("alice")
    assert passwords.verify_password("pw-1", user.password_hash)
    assert (user.scopes, user.roles, user.disabled) == ({"orders:read"}, {"clerk"}, False)
    with pytest.raises(StoreError, match="already exists"):
        admin.users.add("alice", "pw-2")
    admin.users.passwd("alice", "pw-2")
    assert passwords.verify_password("pw-2", store.principals.find_user("alice").password_hash)
    with pytest.raises(StoreError, match="no user named"):
        admin.users.passwd("bob", "pw")
    admin.users.set_disabled("alice", True)
    assert store.principals.find_user("alice").disabled
    admin.users.set_disabled("alice", False)
    assert not store.principals.find_user("alice").disabled
    with pytest.raises(StoreError, match="no principal named"):
        admin.users.set_disabled("bob", True)
    [listed] = admin.users.list()
    assert listed.to_json() | {"created_at": 0, "updated_at": 0} == {
        "name": "alice", "kind": "user", "scopes": ["orders:read"], "roles": ["clerk"], "disabled": False,
        "has_password": True, "created_at": 0, "updated_at": 0}


def test_set_password_with_expected_old_is_compare_and_swap(store, admin):
    admin.users.add("alice", "pw")
    stored = store.principals.find_user("alice").password_hash
    assert store.principals.set_password("alice", "$argon2id$new", expected_old=stored)
    assert not store.principals.set_password("alice", "$argon2id$newer", expected_old=stored)
    assert store.principals.find_user("alice").password_hash == "$argon2id$new"


def test_a_client_is_not_a_user_and_disabling_reaches_its_keys(store, admin):
    _, secret = admin.keys.create("partner-a")
    assert store.principals.find_user("partner-a") is None
    admin.users.set_disabled("partner-a", True)
    assert store.keys.find(apikeys.fingerprint(secret)).principal_disabled


def test_import_htpasswd(store, admin):
    import bcrypt

    good = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    text = f"# users\nalice:{good}\nbob:{{SHA}}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\nnocolon\n"
    with pytest.raises(StoreError, match="nothing imported: 2 line"):
        admin.users.import_htpasswd(text)
    assert admin.users.list() == []
    result = admin.users.import_htpasswd(text, ["s"], skip_unsupported=True)
    assert result.to_json()["imported"] == ["alice"] and [r["line"] for r in result.refused] == [3, 4]
    assert store.principals.find_user("alice").password_hash == good


# -- revocations ---------------------------------------------------------------------------------

def test_token_revocations_by_issuer_and_any(store, admin):
    record = admin.tokens.revoke("j-1", "https://idp", keep_for=60)
    assert record.to_json() == {"kind": "jti", "issuer": "https://idp", "value": "j-1",
                                "expires_at": pytest.approx(time.time() + 60, abs=5)}
    revoke(store, "jti", "j-any")
    assert store.revocations.is_revoked("jti", "j-1", "https://idp")
    assert not store.revocations.is_revoked("jti", "j-1", "https://other")
    assert store.revocations.is_revoked("jti", "j-any", "https://whoever")
    assert not store.revocations.is_revoked("jti", "j-2", "https://idp")
    listed = admin.tokens.list()
    assert [(r.value, r.issuer) for r in listed] == [("j-1", "https://idp"), ("j-any", None)]
    assert listed[1].to_json()["expires_at"] is None and "created_at" in listed[0].to_json()


def test_revocations_expire_and_widen(store, admin):
    with pytest.raises(StoreError, match="already expired"):
        revoke(store, "jti", "old", ANY_ISSUER, time.time() - 1)
    with pytest.raises(StoreError, match="unknown revocation kind"):
        revoke(store, "password", "x")
    with pytest.raises(StoreError, match="1 to 1024"):
        revoke(store, "jti", "x" * 1025)
    revoke(store, "jti", "short", ANY_ISSUER, time.time() + 0.2)
    revoke(store, "jti", "short", ANY_ISSUER, time.time() + 0.1)  # the later expiry wins
    revoke(store, "jti", "gone", ANY_ISSUER, time.time() + 0.1)
    time.sleep(0.15)
    assert store.revocations.purge(time.time()) == 1
    assert [r.value for r in store.revocations.list("jti")] == ["short"]


def test_revoke_from_a_token_reads_it_unverified(store, admin):
    import jwt

    token = jwt.encode({"jti": "from-token", "iss": "https://idp", "exp": int(time.time()) + 600}, "k" * 32)
    record = admin.tokens.revoke(None, token=token, keep_for=60)
    assert (record.value, record.issuer) == ("from-token", "https://idp")
    assert record.expires_at == pytest.approx(time.time() + 900, abs=5)
    from authz.admin import InvalidToken

    with pytest.raises(InvalidToken, match="not a JWT"):
        admin.tokens.revoke(None, token="not-a-token", keep_for=60)
    with pytest.raises(InvalidToken, match="no jti"):
        admin.tokens.revoke(None, token=jwt.encode({"iss": "x"}, "k" * 32), keep_for=60)


# -- certificates ----------------------------------------------------------------------------------

def test_certificates_register_check_revoke(store, admin):
    registered = admin.certificates.register("payments-api", FP.upper())
    assert registered.to_json() == {"fingerprint": FP, "principal": "payments-api", "kind": "service",
                                    "subject": None, "not_after": None}
    with pytest.raises(StoreError, match="already registered to payments-api"):
        admin.certificates.register("other", FP)
    status = store.certificates.check(FP, ISSUER_DN, "1a")
    assert (status.revoked, status.principal, status.kind, status.principal_disabled) == (
        False, "payments-api", "service", False)
    assert store.certificates.check("cd" * 32, "", "").principal is None
    assert not store.certificates.is_revoked(FP, ISSUER_DN, "1a")
    admin.certificates.revoke_serial(ISSUER_DN, "0x00:1A")
    assert store.certificates.is_revoked("cd" * 32, ISSUER_DN, "1a") and store.certificates.check(FP, ISSUER_DN,
                                                                                                  "1a").revoked
    admin.certificates.revoke_fingerprint(":".join(FP[i:i + 2] for i in range(0, 64, 2)))
    assert store.certificates.is_revoked(FP, "", "")
    registered_list, revoked = admin.certificates.list()
    assert [c.fingerprint for c in registered_list] == [FP]
    assert sorted(r.kind for r in revoked) == ["cert_fingerprint", "cert_serial"]
    with pytest.raises(ValueError, match="not a SHA-256 fingerprint"):
        admin.certificates.register("p", "abc")


# -- signing keys ----------------------------------------------------------------------------------

def test_signing_keys_rotate_and_publish(store, admin):
    assert store.signing_keys.active() is None and store.signing_keys.published() == []
    admin.signing_keys.ensure(60)
    first = store.signing_keys.active()
    assert first.algorithm == "EdDSA" and "PRIVATE KEY" in first.private_pem
    admin.signing_keys.ensure(60)
    assert store.signing_keys.active().kid == first.kid
    rotation = admin.signing_keys.rotate(0.2)
    assert rotation.retired == (first.kid,) and store.signing_keys.active().kid == rotation.kid
    published = store.signing_keys.published()
    assert [k["kid"] for k in published] == [rotation.kid, first.kid]
    assert all("d" not in k and k["alg"] == "EdDSA" for k in published)  # public halves only
    assert [k.status for k in admin.signing_keys.list()] == ["active", "retired"]
    time.sleep(0.25)
    assert [k["kid"] for k in store.signing_keys.published()] == [rotation.kid]


# -- policy snapshots ------------------------------------------------------------------------------

def test_policy_snapshots_newest_and_retention(store):
    assert store.policy_snapshots.latest("/p") is None and store.policy_snapshots.latest_revision("/p") is None
    for i in range(KEEP + 2):
        save_snapshot(store.policy_snapshots, f"r{i}", "/p", {"policy.json": f"{i}".encode(), "k.pem": b"\0\1"})
        time.sleep(0.002)
    latest = store.policy_snapshots.latest("/p")
    assert (latest.revision, latest.files) == (f"r{KEEP + 1}", {"policy.json": f"{KEEP + 1}".encode(),
                                                                 "k.pem": b"\0\1"})
    save_snapshot(store.policy_snapshots, "r5", "/p", {"policy.json": b"5"})  # served again: newest
    assert store.policy_snapshots.latest_revision("/p") == "r5"
    assert store.policy_snapshots.latest_revision("/other") is None
    for i in range(KEEP):
        save_snapshot(store.policy_snapshots, f"x{i}", "/q", {})
        time.sleep(0.002)
    assert store.policy_snapshots.latest("/p") is None  # only the KEEP newest are kept, in all
    assert store.policy_snapshots.latest_revision("/q") == f"x{KEEP - 1}"


# -- one-time values (DPoP proof ids) ----------------------------------------------------------------

def test_a_nonce_is_accepted_once_until_it_expires(store):
    later = time.time() + 60
    assert store.nonces.first_use("dpop", "jti-1", later)
    assert not store.nonces.first_use("dpop", "jti-1", later)  # a replay
    assert not store.nonces.first_use("dpop", "jti-1", later + 60)  # a replay cannot extend its own window
    assert store.nonces.first_use("other", "jti-1", later)  # scopes are apart
    assert store.nonces.first_use("dpop", "jti-2", later)
    gone = time.time() - 1
    assert store.nonces.first_use("dpop", "expired", gone)
    assert store.nonces.first_use("dpop", "expired", later)  # its record had expired: a new window


def test_a_nonce_is_seen_by_another_handle_and_another_thread(file_store):
    import threading

    later = time.time() + 60
    assert file_store.nonces.first_use("dpop", "shared", later)
    other = open_store(file_store.url)
    seen: list[bool] = []
    thread = threading.Thread(target=lambda: seen.append(other.nonces.first_use("dpop", "shared", later)))
    thread.start()
    thread.join()
    assert seen == [False]
    other.close()


def test_concurrent_first_uses_of_one_nonce_accept_exactly_one(file_store):
    import threading

    later = time.time() + 60
    handles = [open_store(file_store.url) for _ in range(4)]
    results: list[bool] = []
    barrier = threading.Barrier(len(handles))

    def claim(handle):
        barrier.wait()
        results.append(handle.nonces.first_use("dpop", "raced", later))

    threads = [threading.Thread(target=claim, args=(h,)) for h in handles]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False, False, False, True]
    for handle in handles:
        handle.close()


# -- a second handle on the same store ---------------------------------------------------------------

def test_writes_are_seen_by_another_handle_at_once(file_store, tmp_path):
    other = open_store(file_store.url)
    admin = Admin(file_store)
    record, secret = admin.keys.create("partner-a")
    assert other.keys.find(apikeys.fingerprint(secret)).status == "active"
    admin.keys.revoke(record.id)
    assert other.keys.find(apikeys.fingerprint(secret)).status == "revoked"


# -- the change log --------------------------------------------------------------------------------

def test_every_write_appends_to_the_change_log(store, admin):
    from authz.store.interface import revocation_ref

    start = store.changes.latest()
    record, secret = admin.keys.create("partner-a")
    admin.keys.revoke(record.id)
    admin.users.add("alice", "pw")
    admin.users.passwd("alice", "pw-2")
    admin.users.set_disabled("alice", True)
    revoke(store, "jti", "j-1", "https://idp")
    admin.certificates.register("payments-api", FP)
    admin.certificates.revoke_fingerprint(FP)
    admin.certificates.revoke_serial(ISSUER_DN, "0x1A")
    admin.signing_keys.ensure(60)
    save_snapshot(store.policy_snapshots, "r1", "/p", {})
    store.last_used.record(record.id)
    store.last_used.count(record.id, True, None, "r", False)
    store.last_used.flush()  # last use and usage are not serving state: no entry
    changes = store.changes.since(start)
    fingerprint = apikeys.fingerprint(secret)
    assert [(c.kind, c.ref) for c in changes] == [
        ("principal", "partner-a"), ("api_key", fingerprint), ("api_key", fingerprint),
        ("principal", "alice"), ("principal", "alice"), ("principal", "alice"),
        ("revocation", revocation_ref("jti", "https://idp", "j-1")),
        ("principal", "payments-api"), ("certificate", FP),
        ("revocation", revocation_ref("cert_fingerprint", ANY_ISSUER, FP)),
        ("revocation", revocation_ref("cert_serial", ISSUER_DN, "1a")),
        ("signing_key", store.signing_keys.active().kid), ("policy_snapshot", "/p")]
    ids = [c.id for c in changes]
    assert ids == sorted(set(ids)) and store.changes.latest() == ids[-1]
    assert store.changes.since(ids[2], limit=2) == changes[3:5]
    assert not store.principals.set_password("nobody", "x") and store.changes.latest() == ids[-1]


def test_a_reader_following_the_change_log_misses_no_concurrent_write(file_store):
    import threading

    admin = Admin(file_store)
    reader = open_store(file_store.url)
    seen: list[int] = []
    done = threading.Event()

    start = file_store.changes.latest()

    def follow() -> None:
        last = start
        while True:
            finished = done.is_set()
            for change in reader.changes.since(last):
                seen.append(change.id)
                last = change.id
            if finished:
                return

    follower = threading.Thread(target=follow)
    follower.start()
    writers = [threading.Thread(target=lambda n=n: [revoke(Admin(open_store(file_store.url)).store, "jti",
                                                           f"w{n}-{i}") for i in range(25)]) for n in range(4)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    done.set()
    follower.join()
    written = [c.id for c in file_store.changes.since(start, limit=10_000)]
    assert len(written) == 100 and seen == written  # every entry, once, in order
    assert admin.tokens.list() and len(admin.tokens.list()) == 100


def test_dump_and_load_move_every_row(store, admin, tmp_path):
    from authz.store.tables import TABLES

    admin.keys.create("partner-a")
    admin.keys.create("web-shop", publishable=True, origins=["https://*.example.com", "http://localhost:3000"])
    _, old_secret = admin.keys.create("partner-b", ["s"])
    admin.keys.rotate(admin.keys.list("partner-b")[0].id, 60)
    admin.users.add("alice", "pw")
    revoke(store, "jti", "j-1")
    admin.certificates.register("payments-api", FP)
    admin.certificates.revoke_fingerprint(FP)
    admin.certificates.revoke_serial(ISSUER_DN, "0x1A")
    admin.signing_keys.ensure(60)
    save_snapshot(store.policy_snapshots, "r1", "/p", {"a": b"1"})
    import ipaddress

    store.last_used.count(admin.keys.list("partner-a")[0].id, True, ipaddress.ip_address("192.0.2.1"), "r", False)
    store.last_used.flush()
    store.outbox.advance("api_key_expiry", None, 1000.0, _events("e1", "e2"))
    store.outbox.claim(time.time(), time.time() + 60, "token", 1)
    target = _migrated(str(tmp_path / "target.db"))
    for table in TABLES:
        target.load(table, store.dump(table))
    assert {table: target.dump(table) for table in TABLES} == {table: store.dump(table) for table in TABLES}
    assert all(store.dump(table) for table in ("key_usage_hours", "key_networks", "key_last_requests"))
    assert target.keys.find(apikeys.fingerprint(old_secret)).status == "deprecated"
    assert [(r.publishable, r.origins) for r in Admin(target).keys.list("web-shop")] == [
        (True, ("https://*.example.com", "http://localhost:3000"))]
    Admin(target).users.add("bob", "pw")  # ids continue after the copied ones
    assert target.outbox.cursor("api_key_expiry") == 1000.0 and target.outbox.counts().pending == 2


# -- expiring keys and the webhook outbox ------------------------------------------------------------

def test_expiring_keys_are_a_range_on_the_expiry(store, admin):
    now = time.time()
    soon, _ = admin.keys.create("partner-a", expires_at=now + 100)
    later, _ = admin.keys.create("partner-b", expires_at=now + 1000)
    admin.keys.create("partner-c", expires_at=now + 5000)
    admin.keys.create("partner-d")
    revoked, _ = admin.keys.create("partner-e", expires_at=now + 200)
    admin.keys.revoke(revoked.id)
    rotated, _ = admin.keys.create("partner-f")
    rotated, _, _ = admin.keys.rotate(rotated.id, 300)
    assert [k.id for k in store.keys.expiring(now, now + 1000)] == [soon.id, rotated.id, later.id]
    assert [k.id for k in store.keys.expiring(now + 100, now + 999)] == [rotated.id]  # (after, until]
    # Counted: active keys only (the deprecated one is replaced, the revoked one gone).
    assert store.keys.count_expiring(now, (150.0, 1000.0, 10_000.0)) == [1, 2, 3]
    assert store.keys.count_expiring(now, ()) == []


def _events(*ids: str, at: float | None = None) -> list:
    from authz.store.records import NewWebhookEvent

    at = time.time() if at is None else at
    return [NewWebhookEvent(i, "api_key.expired", f'{{"id":"{i}"}}', at) for i in ids]


def test_the_outbox_leases_each_event_to_one_deliverer(store):
    outbox, now = store.outbox, time.time()
    assert outbox.enqueue(_events("e1", "e2", "e3")) == 3
    assert outbox.enqueue(_events("e2", "e4")) == 1  # e2 is kept as it was
    assert outbox.has_due(now + 1)
    first = outbox.claim(now + 1, now + 60, "token-1", 2)
    second = outbox.claim(now + 1, now + 60, "token-2", 10)
    assert len(first) == 2 and len(second) == 2 and not {e.id for e in first} & {e.id for e in second}
    assert outbox.claim(now + 1, now + 60, "token-3", 10) == [] and not outbox.has_due(now + 1)
    assert first[0].body == f'{{"id":"{first[0].id}"}}' and first[0].attempts == 0

    done, retried = first
    assert not outbox.delivered(done.id, "token-2", now + 2)  # only the lease holder settles
    assert outbox.delivered(done.id, "token-1", now + 2)
    assert outbox.failed(retried.id, "token-1", now + 2, "HTTP 500", retry_at=now + 30)
    assert not outbox.has_due(now + 29)
    [again] = outbox.claim(now + 31, now + 90, "token-4", 10)
    assert (again.id, again.attempts, again.last_error) == (retried.id, 1, "HTTP 500")
    assert outbox.failed(again.id, "token-4", now + 32, "HTTP 503", retry_at=None)  # given up

    # A lease that runs out (its deliverer died mid-send) makes the event due again.
    lost = second[0]
    [taken] = outbox.claim(now + 61, now + 120, "token-5", 1)
    assert taken.id == lost.id and not outbox.delivered(lost.id, "token-2", now + 62)
    assert outbox.delivered(lost.id, "token-5", now + 62)

    states = {e.id: (e.state, e.attempts) for e in outbox.list()}
    assert states[done.id] == ("delivered", 1) and states[again.id] == ("failed", 2)
    assert [e.id for e in outbox.list("failed")] == [again.id]
    counts = outbox.counts()
    assert (counts.pending, counts.delivered, counts.failed) == (1, 2, 1) and counts.oldest_pending is not None
    assert outbox.prune(finished_before=now + 1000, pending_before=now - 1000) == 3
    assert [e.state for e in outbox.list()] == ["pending"]
    assert outbox.prune(finished_before=now, pending_before=now + 1000) == 1
    assert outbox.counts().oldest_pending is None


def test_a_cursor_advances_only_from_what_was_read(store):
    outbox = store.outbox
    assert outbox.cursor("scan") is None
    assert outbox.advance("scan", None, 10.0, _events("a"))
    assert not outbox.advance("scan", None, 20.0, _events("b"))  # someone looked first
    assert outbox.cursor("scan") == 10.0
    assert not outbox.advance("scan", 5.0, 20.0, _events("b"))
    assert outbox.advance("scan", 10.0, 20.0, _events("b", "a"))
    assert outbox.cursor("scan") == 20.0 and outbox.cursor("other") is None
    assert sorted(e.id for e in outbox.list()) == ["a", "b"]
