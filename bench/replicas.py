"""Issue 14's numbers: replicas of one PostgreSQL store.

    .venv/bin/python bench/replicas.py            # prints the section for bench/RESULTS.md
    .venv/bin/python bench/replicas.py --quick    # fewer revocations

- **Propagation**: three ``authz serve`` instances (two workers each) on one throwaway
  PostgreSQL (tests/pg.py); for each kind (API key revoked, user disabled, password
  changed, jti revoked) ``N`` credentials are warmed on every worker, then revoked one
  at a time with the CLI; the time from the CLI returning until every worker of every
  instance has refused it (an upper bound: workers are asked in turn).
- **Outage**: PostgreSQL stopped for 10 s under load with AUTHZ_MAX_STALENESS=5, then
  restarted; every answer counted by phase.
- **In-process decide()**: p50 with a PostgreSQL replica against SQLite, per credential kind.
- **Invalid-key flood**: store queries made by 20,000 random well-formed keys.
- **db copy**: 100,000 keys SQLite → PostgreSQL → SQLite, checksums compared.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from authz.admin import Admin  # noqa: E402
from authz.admin.copy import copy_store  # noqa: E402
from authz.authenticators import Context  # noqa: E402
from authz.credentials import apikeys  # noqa: E402
from authz.engine import DecisionEngine  # noqa: E402
from authz.policy import load_policy  # noqa: E402
from authz.request import CheckRequest  # noqa: E402
from authz.store import open_store, serving_store  # noqa: E402
from tests import pg  # noqa: E402
from tests.conftest import ask_on_a_worker, free_port, write_policy  # noqa: E402
from tests.test_replicas_e2e import POLICY, Fleet, basic, cli  # noqa: E402


class Servers:
    def __init__(self) -> None:
        self.started = []

    def __call__(self, *args, **kwargs):
        from tests.conftest import Server

        server = Server(*args, **kwargs)
        self.started.append(server)
        return server

    def stop(self) -> None:
        for server in self.started:
            server.stop()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def setup(cluster: pg.Cluster, work: Path):
    from tests.idp import mint, public_pem, rsa_key

    policy_dir = work / "policies"
    (policy_dir / "keys").mkdir(parents=True)
    idp_key = rsa_key()
    (policy_dir / "keys" / "idp.pem").write_bytes(public_pem(idp_key))
    write_policy(policy_dir, POLICY)
    url = cluster.database()
    cli(url, "db", "init")
    return url, policy_dir, lambda **claims: mint(idp_key, kid=None, iss="https://idp.example", aud="api", **claims)


def propagation(cluster: pg.Cluster, work: Path, n: int) -> dict[str, list[float]]:
    url, policy_dir, token = setup(cluster, work)
    admin = Admin(open_store(url))
    cases: dict[str, list] = {kind: [] for kind in ("API key revoked", "user disabled", "password changed",
                                                     "jti revoked")}
    for i in range(n):
        record, secret = admin.keys.create(f"partner-{i}")
        cases["API key revoked"].append(("/key", {"X-API-Key": secret}, ["keys", "revoke", record.id], None))
        admin.users.add(f"d{i}", "pw-1")
        cases["user disabled"].append(("/staff", {"Authorization": basic(f"d{i}", "pw-1")},
                                       ["users", "disable", f"d{i}"], None))
        admin.users.add(f"p{i}", "pw-1")
        cases["password changed"].append(("/staff", {"Authorization": basic(f"p{i}", "pw-1")},
                                          ["users", "passwd", f"p{i}", "--password-stdin"], "pw-2\n"))
        cases["jti revoked"].append(("/jwt", {"Authorization": f"Bearer {token(jti=f's{i}')}"},
                                     ["tokens", "revoke", "--jti", f"s{i}"], None))
    servers = Servers()
    try:
        fleet = Fleet(servers, url, policy_dir, work)
        times: dict[str, list[float]] = {}
        for kind, items in cases.items():
            for path, headers, _, _ in items:
                fleet.every_worker(path, headers, 200, timeout=60)
            times[kind] = []
            for path, headers, command, stdin in items:
                cli(url, *command, input=stdin)
                times[kind].append(fleet.every_worker(path, headers, 401, timeout=30))
        return times
    finally:
        servers.stop()


def outage(cluster: pg.Cluster, work: Path) -> dict[str, Counter]:
    url, policy_dir, _ = setup(cluster, work)
    admin = Admin(open_store(url))
    _, good_secret = admin.keys.create("partner-a")
    revoked, revoked_secret = admin.keys.create("partner-b")
    servers = Servers()
    phases: dict[str, Counter] = {}
    try:
        fleet = Fleet(servers, url, policy_dir, work, AUTHZ_MAX_STALENESS="5")
        for secret in (good_secret, revoked_secret):
            fleet.every_worker("/key", {"X-API-Key": secret}, 200)
        admin.keys.revoke(revoked.id)
        fleet.every_worker("/key", {"X-API-Key": revoked_secret}, 401)
        phase = ["before"]
        stop = threading.Event()

        def load(instance) -> None:
            while not stop.is_set():
                for which, secret in (("valid key", good_secret), ("revoked key", revoked_secret)):
                    try:
                        _, status = ask_on_a_worker(instance, {"X-Original-Method": "GET", "X-Original-URI": "/key",
                                                               "X-API-Key": secret}, timeout=5)
                    except (OSError, AssertionError):
                        status = 0
                    phases.setdefault(phase[0], Counter())[(which, status)] += 1

        threads = [threading.Thread(target=load, args=(i,)) for i in fleet.instances]
        for t in threads:
            t.start()
        time.sleep(3)
        phase[0] = "PostgreSQL down, 0-5 s"
        cluster.stop()
        time.sleep(5)
        phase[0] = "PostgreSQL down, 5-10 s"
        time.sleep(5)
        phase[0] = "restarted, first 5 s"
        cluster.start()
        time.sleep(5)
        phase[0] = "restarted, after 5 s"
        time.sleep(3)
        stop.set()
        for t in threads:
            t.join()
        return phases
    finally:
        servers.stop()


def decide_p50(cluster: pg.Cluster, work: Path, n: int) -> dict[str, tuple[float, float]]:
    _, policy_dir, token = setup(cluster, work)
    results: dict[str, dict[str, float]] = {}
    for backend in ("sqlite", "postgresql"):
        url = str(work / "decide.db") if backend == "sqlite" else cluster.database()
        base = open_store(url, serving=True)
        base.migrate()
        admin = Admin(base)
        _, secret = admin.keys.create("partner-a")
        admin.users.add("alice", "pw-1")
        store = serving_store(base, 30)
        engine = DecisionEngine(load_policy(policy_dir, Context(store=store)))
        requests = {"API key": ("/key", {"X-API-Key": secret}),
                    "Basic (verified once, then cached)": ("/staff", {"Authorization": basic("alice", "pw-1")}),
                    "JWT (jti revocation check)": ("/jwt", {"Authorization": f"Bearer {token(jti='x')}"})}
        results[backend] = {}
        for kind, (path, headers) in requests.items():
            def once(path=path, headers=headers, engine=engine):
                started = time.perf_counter_ns()
                decision = engine.decide(CheckRequest.build("GET", path, "api.example.com", "http", headers))
                elapsed = time.perf_counter_ns() - started
                assert decision.allowed, decision
                return elapsed

            for _ in range(200):
                once()
            trials = [statistics.median(once() for _ in range(n)) / 1000 for _ in range(5)]
            results[backend][kind] = min(trials)
    return {kind: (results["sqlite"][kind], results["postgresql"][kind]) for kind in results["sqlite"]}


def flood(cluster: pg.Cluster, count: int = 20_000) -> dict[str, float]:
    url = cluster.database()
    base = open_store(url, serving=True)
    base.migrate()
    admin = Admin(base)
    _, secret = admin.keys.create("partner-a")
    replica = serving_store(base, 30)
    replica.keys.find(apikeys.fingerprint(secret))
    time.sleep(0.1)
    queries, polls = replica.queries, replica.polls
    started = time.monotonic()
    for _ in range(count):
        replica.keys.find(apikeys.fingerprint(apikeys.generate("live")))
    elapsed = time.monotonic() - started
    flood_queries, flood_polls = replica.queries - queries, replica.polls - polls
    _, never_seen = admin.keys.create("partner-b")
    time.sleep(0.1)
    queries = replica.queries
    replica.keys.find(apikeys.fingerprint(never_seen))
    first = replica.queries - queries
    replica.keys.find(apikeys.fingerprint(never_seen))
    return {"keys": count, "seconds": elapsed, "key lookups": flood_queries, "change-log polls": flood_polls,
            "never-seen key: lookups": first, "same key again: lookups": replica.queries - queries - first}


def db_copy(cluster: pg.Cluster, work: Path, count: int) -> dict[str, float]:
    source = open_store(work / "big.db")
    source.migrate()
    now = time.time()
    source.load("principals", [(i + 1, f"partner-{i}", "client", "", "", None, 0, now, now) for i in range(1000)])
    source.load("api_keys", [(f"key_{i:08d}", i % 1000 + 1, apikeys.fingerprint(apikeys.generate("live")),
                              f"ak_live_…{i:04d}", "live", "orders:read", "", "active", now, None, None, None,
                              None, None, 0, "") for i in range(count)])
    started = time.monotonic()
    there = copy_store(source, open_store(cluster.database()))
    middle = time.monotonic()
    back = copy_store(open_store(there_url := cluster.url(_last_database(cluster))), open_store(work / "back.db"))
    del there_url
    finished = time.monotonic()
    assert there.checksum == back.checksum and back.counts["api_keys"] == count
    return {"keys": count, "SQLite → PostgreSQL s": middle - started, "PostgreSQL → SQLite s": finished - middle,
            "checksums match": there.checksum == back.checksum, "rows": sum(back.counts.values())}


def _last_database(cluster: pg.Cluster) -> str:
    import psycopg

    with psycopg.connect(cluster.url()) as conn:
        return conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 't%' "
                            "ORDER BY oid DESC LIMIT 1").fetchone()[0]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n = 10 if args.quick else 50
    bindir = pg.binaries()
    if bindir is None:
        print("PostgreSQL is not installed: `make servers`", file=sys.stderr)
        return 2
    cluster = pg.Cluster(bindir, free_port()).init()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            copied = db_copy(cluster, work, 10_000 if args.quick else 100_000)
            flooded = flood(cluster)
            decided = decide_p50(cluster, work / "d", 500 if args.quick else 2000)
            times = propagation(cluster, work / "p", n)
            down = outage(cluster, work / "o")
    finally:
        cluster.destroy()
    print(f"### Propagation ({n} revocations of each kind; 3 instances x 2 workers)\n")
    print("| kind | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|")
    for kind, values in times.items():
        print(f"| {kind} | {pct(values, 0.5) * 1000:.0f} | {pct(values, 0.99) * 1000:.0f} | {max(values) * 1000:.0f} |")
    print("\n### Outage (AUTHZ_MAX_STALENESS=5; PostgreSQL stopped 10 s)\n")
    print("| phase | answers (credential, status: count) |\n|---|---|")
    for phase, counts in down.items():
        print(f"| {phase} | {', '.join(f'{w} {s}: {c}' for (w, s), c in sorted(counts.items()))} |")
    print("\n### In-process decide() p50 µs (best of 5 trials)\n")
    print("| credential | SQLite | PostgreSQL replica | ratio |\n|---|---:|---:|---:|")
    for kind, (sqlite, postgres) in decided.items():
        print(f"| {kind} | {sqlite:.1f} | {postgres:.1f} | {postgres / sqlite:.2f} |")
    print("\n### Invalid-key flood, never-seen key\n")
    print(", ".join(f"{k}: {v:.2f}" if isinstance(v, float) else f"{k}: {v}" for k, v in flooded.items()))
    print("\n### db copy\n")
    print(", ".join(f"{k}: {v:.1f}" if isinstance(v, float) else f"{k}: {v}" for k, v in copied.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
