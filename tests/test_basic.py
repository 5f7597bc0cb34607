"""Basic auth: robust parsing, Argon2id, the verification cache, htpasswd import."""

import base64
import time

import bcrypt
import pytest

from authz.credentials import passwords
from authz.decision import Reason
from authz.request import CheckRequest
from tests.conftest import add_user, engine_for, write_policy


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def engine(store, policy_dir):
    write_policy(policy_dir, {"authenticators": {"staff": {"type": "basic", "realm": "Staff \"area\""}},
                              "routes": [{"id": "r", "require": "staff"}]})
    return engine_for(store, policy_dir)


def decide(engine, authorization=None):
    headers = {"Authorization": authorization} if authorization is not None else {}
    return engine.decide(CheckRequest.build("GET", "/", "h", headers=headers))


def test_valid_user_with_scopes_and_roles(store, engine):
    add_user(store, "alice", "correct horse", scopes=["orders:read"], roles=["admin"])
    d = decide(engine, basic("alice", "correct horse"))
    assert d.allowed and d.principal.id == "alice" and d.principal.kind == "user"
    assert d.principal.roles == {"admin"} and d.methods == ["basic"]


def test_password_with_colons_and_unicode(store, engine):
    add_user(store, "bob", "a:b:c ünïcödé")
    assert decide(engine, basic("bob", "a:b:c ünïcödé")).allowed


@pytest.mark.parametrize("header", [
    "Basic !!!notbase64",
    "Basic " + base64.b64encode(b"no-colon").decode(),
    "Basic " + base64.b64encode(b":password-without-user").decode(),
    "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),      # not UTF-8
    "Basic " + base64.b64encode(b"al\x00ice:pw").decode(),
    "Basic",
    "Basic " + "A" * 5000,
])
def test_malformed_headers_are_invalid_not_errors(engine, header):
    d = decide(engine, header)
    assert (d.status, d.reason) == (401, Reason.CREDENTIALS_INVALID)
    assert d.challenges == ['Basic realm="Staff \\"area\\"", charset="UTF-8"']


def test_scheme_is_case_insensitive(store, engine):
    add_user(store, "alice", "pw")
    assert decide(engine, basic("alice", "pw").replace("Basic", "bAsIc")).allowed


def test_other_schemes_are_absent_for_basic(engine):
    d = decide(engine, "Bearer abc")
    # absent for Basic, but a credential nobody owns: invalid, with the challenge
    assert (d.status, d.reason) == (401, Reason.CREDENTIALS_INVALID)
    d = decide(engine)
    assert (d.status, d.reason) == (401, Reason.CREDENTIALS_MISSING)


def test_wrong_password_and_unknown_user_look_the_same(store, engine):
    add_user(store, "alice", "pw")
    wrong, unknown = decide(engine, basic("alice", "nope")), decide(engine, basic("mallory", "pw"))
    assert (wrong.reason, wrong.detail) == (unknown.reason, unknown.detail) == (
        Reason.CREDENTIALS_INVALID, "invalid user name or password")
    # and take comparable time (a KDF run either way)
    def timed(header):
        start = time.perf_counter()
        decide(engine, header)
        return time.perf_counter() - start
    # a new guess each time: a repeated wrong password is remembered and costs no KDF run
    t_wrong = min(timed(basic("alice", f"nope-{i}")) for i in range(3))
    t_unknown = min(timed(basic("mallory", f"pw-{i}")) for i in range(3))
    assert t_unknown > t_wrong / 3


def test_cache_skips_the_kdf_but_sees_changes_at_once(store, engine, monkeypatch):
    add_user(store, "alice", "old-pw")
    calls = []
    real = passwords.verify_password
    monkeypatch.setattr(passwords, "verify_password", lambda p, h: calls.append(1) or real(p, h))
    assert decide(engine, basic("alice", "old-pw")).allowed
    assert decide(engine, basic("alice", "old-pw")).allowed
    assert len(calls) == 1  # second request served from the cache

    store.principals.set_password("alice", passwords.hash_password("new-pw"))
    assert decide(engine, basic("alice", "old-pw")).reason == Reason.CREDENTIALS_INVALID
    assert decide(engine, basic("alice", "new-pw")).allowed

    store.principals.set_disabled("alice")
    d = decide(engine, basic("alice", "new-pw"))
    assert (d.status, d.reason) == (401, Reason.CREDENTIAL_REVOKED)
    # a disabled user with a wrong password learns nothing about the account
    assert decide(engine, basic("alice", "nope")).reason == Reason.CREDENTIALS_INVALID


def test_a_repeated_wrong_password_costs_one_kdf_and_never_outlives_the_hash(store, engine, monkeypatch):
    """A client repeating a stale password costs one KDF run, not one per request; the
    memory is keyed on the stored hash, so the password set to that value works at once."""
    add_user(store, "alice", "pw")
    calls = []
    real = passwords.verify_password
    monkeypatch.setattr(passwords, "verify_password", lambda p, h: calls.append(1) or real(p, h))
    for _ in range(3):
        assert decide(engine, basic("alice", "nope")).reason == Reason.CREDENTIALS_INVALID
    assert len(calls) == 1
    assert decide(engine, basic("alice", "other")).reason == Reason.CREDENTIALS_INVALID
    assert len(calls) == 2  # a different guess is a KDF run of its own
    store.principals.set_password("alice", passwords.hash_password("nope"))
    assert decide(engine, basic("alice", "nope")).allowed


def test_argon2id_parameters_meet_owasp():
    stored = passwords.hash_password("pw")
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert passwords.verify_password("pw", stored)
    assert not passwords.verify_password("pW", stored)
    assert not passwords.needs_rehash(stored)


def test_imported_bcrypt_is_verified_then_upgraded(store, engine):
    htpasswd_hash = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=5)).decode().replace("$2b$", "$2y$")
    store.principals.add_user("carol", passwords.check_importable(htpasswd_hash))
    assert decide(engine, basic("carol", "wrong")).reason == Reason.CREDENTIALS_INVALID
    assert store.principals.find_user("carol").password_hash == htpasswd_hash
    assert decide(engine, basic("carol", "s3cret")).allowed
    upgraded = store.principals.find_user("carol").password_hash
    assert upgraded.startswith("$argon2id$")
    assert decide(engine, basic("carol", "s3cret")).allowed


@pytest.mark.parametrize(("stored", "why"), [
    ("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "unsalted SHA-1"),
    ("$apr1$abcdefgh$0123456789abcdefghijkl", "MD5-crypt"),
    ("$1$abcdefgh$0123456789abcdefghijkl", "MD5-crypt"),
    ("abJnggxhB/yWI", "DES crypt"),
    ("plaintext-password", "plain text"),
])
def test_weak_htpasswd_formats_are_refused(stored, why):
    with pytest.raises(passwords.UnsupportedHash, match=why):
        passwords.check_importable(stored)


def test_concurrent_logins_of_one_user_share_one_verification(store, policy_dir, monkeypatch):
    """When a busy user's cache entry expires, the requests arriving together wait for
    the one KDF run instead of each asking for a KDF slot and being refused "busy"."""
    import threading

    from authz.authenticators import Context
    from authz.authenticators.password_guard import PasswordGuard
    from authz.engine import DecisionEngine
    from authz.policy import load_policy

    write_policy(policy_dir, {"authenticators": {"staff": {"type": "basic"}},
                              "routes": [{"id": "r", "require": "staff"}]})
    add_user(store, "alice", "alice-pw")
    engine = DecisionEngine(load_policy(policy_dir, Context(store=store, password_guard=PasswordGuard(
        user_failures=10, address_failures=10, concurrency=1))))
    runs = []
    real = passwords.verify_password

    def slow_verify(password, stored):
        runs.append(1)
        time.sleep(0.3)  # a slow KDF: every other request arrives while it runs
        return real(password, stored)

    monkeypatch.setattr(passwords, "verify_password", slow_verify)
    results = []
    threads = [threading.Thread(target=lambda: results.append(decide(engine, basic("alice", "alice-pw"))))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(results) == 8 and all(d.allowed for d in results), [d.detail for d in results]
    assert len(runs) == 1
