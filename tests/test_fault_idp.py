"""IdP isolation (issue 10, point 3): a JWKS or introspection endpoint that hangs,
answers after 5 s or drips a byte a second holds no request while usable keys or
cached answers exist, is asked by one fetch at a time, at most once a second while
failing, and each fetch ends at its total deadline. Under real workers (gunicorn and
granian), API-key decisions keep their latency while bearer clients hammer the broken
IdP."""

import json
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from authz.authenticators.http_client import FetchError, fetch
from authz.authenticators.keysets import KeysUnavailable, RemoteKeySet
from tests.conftest import ask_on_a_worker, write_policy
from tests.idp import AUDIENCE, ISSUER, IdentityProvider, mint, public_jwk, rsa_key
from tests.test_gunicorn import authz

RSA = rsa_key()
ATTACKER = rsa_key()


@pytest.fixture
def idp():
    provider = IdentityProvider()
    provider.jwks = {"keys": [public_jwk(RSA, "k1", "RS256")]}
    yield provider
    provider.stop()


@pytest.mark.parametrize("mode", ["hang", "slow", "drip"])
def test_a_fetch_ends_at_its_total_deadline(idp, mode):
    idp.mode = mode
    started = time.monotonic()
    with pytest.raises(FetchError, match="within 1 s"):
        fetch(idp.url + "/jwks", timeout=1.0)
    # per-read timeouts would let the drip run for minutes; generous bound for a busy machine
    assert time.monotonic() - started < 4.0


def test_known_keys_never_wait_and_a_hanging_idp_is_asked_once_a_second(idp):
    idp.cache_control = "max-age=1"
    keys = RemoteKeySet(idp.url + "/jwks", ["RS256"], "test", timeout=2.0, max_stale=60)
    assert keys.candidates("k1", "RS256")
    idp.mode = "hang"
    time.sleep(1.0)  # past max-age: refreshes start, and hang
    slowest, calls = 0.0, 0
    started = time.monotonic()

    def lookups():
        nonlocal slowest, calls
        while time.monotonic() - started < 3.0:
            t = time.monotonic()
            assert keys.candidates("k1", "RS256")  # stale but usable: served
            slowest = max(slowest, time.monotonic() - t)
            calls += 1

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: lookups(), range(4)))
    assert calls > 1000
    # no lookup waited on a fetch (each takes its whole 2 s deadline); loose for a busy machine
    assert slowest < 1.5, slowest
    assert idp.hits["/jwks"] <= 1 + 2, idp.hits  # single flight, paced: ≤ one per second


def test_no_usable_keys_one_fetch_then_fail_fast(idp):
    idp.mode = "hang"
    keys = RemoteKeySet(idp.url + "/jwks", ["RS256"], "test", timeout=1.0)
    outcomes = []

    def lookup(_):
        try:
            keys.candidates("k1", "RS256")
            outcomes.append("keys")
        except KeysUnavailable:
            outcomes.append("unavailable")

    with ThreadPoolExecutor(10) as pool:
        list(pool.map(lookup, range(10)))
    assert outcomes == ["unavailable"] * 10
    assert idp.hits["/jwks"] == 1  # one in flight, the others waited for it
    started = time.monotonic()
    for i in range(200):
        lookup(i)
    assert time.monotonic() - started < 1.0  # failing: denied at once, not after a fetch each
    assert idp.hits["/jwks"] <= 3
    idp.mode = None
    deadline = time.monotonic() + 5
    while outcomes[-1] != "keys":
        assert time.monotonic() < deadline
        lookup(0)
        time.sleep(0.05)


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98] if len(samples) >= 100 else max(samples)


def test_a_broken_idp_costs_api_keys_nothing(store, policy_dir, server, idp):
    write_policy(policy_dir, {
        "authenticators": {
            "key": {"type": "api_key"},
            "jwt": {"type": "jwt", "issuer": ISSUER, "audience": AUDIENCE, "algorithms": ["RS256"],
                    "jwks_uri": idp.url + "/jwks", "timeout": 1},
            "as": {"type": "oauth2_introspection", "url": idp.url + "/introspect", "client_id": idp.client_id,
                   "client_secret_env": "AS_SECRET", "timeout": 1},
        },
        "routes": [
            {"id": "keys", "match": {"paths": ["/v1/keys"]}, "require": "key"},
            {"id": "jwt", "match": {"paths": ["/v1/jwt"]}, "require": "jwt"},
            {"id": "as", "match": {"paths": ["/v1/as"]}, "require": "as"},
        ]})
    key = authz(store, "keys", "create", "--principal", "partner-a")["key"]
    server = server(workers=3, AS_SECRET=idp.client_secret)
    good = mint(RSA)

    def ask(session, uri, headers):
        return session.get(server.url + "/auth-request", timeout=30, headers={
            "X-Original-Method": "GET", "X-Original-URI": uri, **headers})

    def api_key_latencies(seconds: float) -> list[float]:
        samples: list[float] = []
        stop = time.monotonic() + seconds

        def run():
            s = requests.Session()
            while time.monotonic() < stop:
                t = time.monotonic()
                assert ask(s, "/v1/keys", {"X-API-Key": key}).status_code == 200
                samples.append(time.monotonic() - t)

        threads = [threading.Thread(target=run) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        return samples

    forged_tokens = [mint(ATTACKER, kid=f"rotated-{n}") for n in range(50)]  # unknown kids: would refetch
    s = requests.Session()
    warmed: set[int] = set()
    for _ in range(300):  # until every worker has learnt the keys (/proc names the worker)
        worker, status = ask_on_a_worker(server, {"X-Original-Method": "GET", "X-Original-URI": "/v1/jwt",
                                                  "Authorization": f"Bearer {good}"})
        assert status == 200
        warmed.add(worker)
        if len(warmed) == 3:
            break
    assert len(warmed) == 3
    report: dict[str, float] = {}
    wrong_allows: list[str] = []

    # the same bearer load each time: first against a healthy IdP (the baseline)
    for mode in (None, "hang", "slow", "drip"):
        idp.mode = mode
        stop = threading.Event()

        def bearer(i, mode=mode, stop=stop):
            s = requests.Session()
            n = 0
            while not stop.is_set():
                n += 1
                forged = forged_tokens[n % len(forged_tokens)]
                if ask(s, "/v1/jwt", {"Authorization": f"Bearer {forged}"}).status_code == 200:
                    wrong_allows.append(f"{mode} forged jwt")
                opaque = f"never-issued-{i}-{n}"  # no cached answer: needs the endpoint
                if ask(s, "/v1/as", {"Authorization": f"Bearer {opaque}"}).status_code == 200:
                    wrong_allows.append(f"{mode} unknown opaque token")

        clients = [threading.Thread(target=bearer, args=(i,)) for i in range(6)]
        for t in clients:
            t.start()
        try:
            time.sleep(1.5)  # the failure is discovered (one fetch per worker pays the deadline)
            samples = api_key_latencies(3.0)
            # known keys keep working during the outage
            assert ask(s, "/v1/jwt", {"Authorization": f"Bearer {good}"}).status_code == 200
        finally:
            stop.set()
            for t in clients:
                t.join(30)
        report[mode or "healthy"] = p99(samples)
        assert len(samples) > 20, (mode, len(samples))  # not stalled (before: 11 s a decision)
    idp.mode = None
    print("API-key p99 (s) under the same bearer load:", json.dumps({k: round(v, 4) for k, v in report.items()}))
    assert wrong_allows == []
    # recovery without a restart: the next background attempt finds the endpoint again
    idp.introspection["fresh"] = {"active": True, "sub": "alice", "exp": int(time.time()) + 300}
    deadline = time.monotonic() + 15
    while ask(s, "/v1/as", {"Authorization": "Bearer fresh", "Connection": "close"}).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    # generous bounds for a shared 2-core machine (before: 1.8 s and 11 s); the 2x target
    # is measured by bench/
    assert max(report["hang"], report["slow"], report["drip"]) < 1.0, report
    output = server.output()
    assert "WORKER TIMEOUT" not in output
    assert "Traceback" not in output
    # one line per worker and episode, not one per request
    assert output.count("failed: ") <= 3 * 2 * 3, output


def test_one_introspection_per_token_in_flight(idp, store, policy_dir, monkeypatch):
    """Concurrent requests with the same uncached token make one call; the others wait
    for it and take its answer."""
    from authz.authenticators import Context
    from authz.engine import DecisionEngine
    from authz.policy import load_policy
    from authz.request import CheckRequest

    monkeypatch.setenv("AS_SECRET", idp.client_secret)
    write_policy(policy_dir, {"authenticators": {"as": {
        "type": "oauth2_introspection", "url": idp.url + "/introspect", "client_id": idp.client_id,
        "client_secret_env": "AS_SECRET", "timeout": 3}}, "routes": [{"id": "r", "require": "as"}]})
    engine = DecisionEngine(load_policy(policy_dir, Context(store=store)))
    idp.introspection["shared"] = {"active": True, "sub": "alice", "exp": int(time.time()) + 300}
    idp.mode, idp.slow_seconds = "slow", 0.5
    request = CheckRequest.build("GET", "/x", "h", headers={"Authorization": "Bearer shared"})
    with ThreadPoolExecutor(8) as pool:
        decisions = list(pool.map(lambda _: engine.decide(request), range(8)))
    assert all(d.allowed for d in decisions)
    assert idp.hits["/introspect"] == 1
