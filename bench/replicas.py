"""Issue 14's numbers: replicas of one PostgreSQL store.

    .venv/bin/python bench/replicas.py            # adds/replaces "## Replicas: PostgreSQL" in bench/RESULTS.md
    .venv/bin/python bench/replicas.py --quick    # fewer revocations, smaller copy; prints only
    .venv/bin/python bench/replicas.py --only propagation -n 10   # one part; prints only

- **Propagation**: three ``authz serve`` instances (two workers each) on one throwaway
  PostgreSQL (tests/pg.py); for each kind (API key revoked, user disabled, password
  changed, jti revoked, client certificate revoked) ``N`` credentials are warmed on every
  worker, then revoked one at a time with the CLI; the time from the CLI returning until
  every worker of every instance has refused it. Every worker is asked at once (a thread
  each, on a kept-alive connection to it, as a proxy keeps them; one question after
  another), each worker's time is when its first refusal arrived, and the kind's time is
  the slowest worker's (late by at most one question). Each password-changed user asks
  from a client address of its own (X-Real-IP), as distinct clients do, so that the
  per-address failure budget does not turn later refusals into throttled ones. Beside
  it: how long that slowest refusing request itself took (a password check's KDF run),
  and when an in-process replica in the bench (the same ``Replica`` every worker runs,
  following the same change log) had applied the change — the propagation alone,
  without HTTP or a KDF.
- **Outage**: PostgreSQL stopped for 10 s under load with AUTHZ_MAX_STALENESS=5, then
  restarted; every answer counted by phase.
- **In-process decide()**: p50 with a PostgreSQL replica against SQLite, per credential kind.
- **Invalid-key flood**: store queries made by 20,000 random well-formed keys.
- **db copy**: 100,000 keys SQLite → PostgreSQL → SQLite, checksums compared.
"""

from __future__ import annotations

import argparse
import ipaddress
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results import replace_section  # noqa: E402  (bench/, the script's directory)

from authz.admin import Admin  # noqa: E402
from authz.admin.copy import copy_store  # noqa: E402
from authz.authenticators import Context  # noqa: E402
from authz.credentials import apikeys  # noqa: E402
from authz.engine import DecisionEngine  # noqa: E402
from authz.policy import load_policy  # noqa: E402
from authz.request import CheckRequest  # noqa: E402
from authz.store import open_store, serving_store  # noqa: E402
from authz.store.replica import Replica  # noqa: E402
from tests import pg  # noqa: E402
from tests.conftest import ask_on_a_worker, free_port  # noqa: E402
from tests.test_replicas_e2e import PKI, Answers, Fleet, basic, cli, nginx_cert, write_fleet_policy  # noqa: E402

PARTS = ("copy", "flood", "decide", "propagation", "outage")


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
    policy_dir = work / "policies"
    token = write_fleet_policy(policy_dir)
    url = cluster.database()
    cli(url, "db", "init")
    return url, policy_dir, token


@dataclass
class Kind:
    """One kind of revocation: for each credential, the request that presents it, the CLI
    command that revokes it, and ``learnt(replica)``, true once a replica has applied it."""

    cases: list[tuple[str, dict[str, str], list[str], str | None, Callable[[Replica], bool]]] = field(
        default_factory=list)
    answers: list[Answers] = field(default_factory=list)
    learnt: list[float] = field(default_factory=list)


def propagation(cluster: pg.Cluster, work: Path, n: int) -> dict[str, Kind]:
    url, policy_dir, token = setup(cluster, work)
    admin = Admin(open_store(url))
    kinds = {kind: Kind() for kind in ("API key revoked", "user disabled", "password changed", "jti revoked",
                                       "certificate revoked")}
    for i in range(n):
        record, secret = admin.keys.create(f"partner-{i}")
        fp = apikeys.fingerprint(secret)
        kinds["API key revoked"].cases.append((
            "/key", {"X-API-Key": secret}, ["keys", "revoke", record.id], None,
            lambda r, fp=fp: r.keys.find(fp).status == "revoked"))
        admin.users.add(f"d{i}", "pw-1")
        kinds["user disabled"].cases.append((
            "/staff", {"Authorization": basic(f"d{i}", "pw-1")}, ["users", "disable", f"d{i}"], None,
            lambda r, name=f"d{i}": r.principals.find_user(name).disabled))
        admin.users.add(f"p{i}", "pw-1")
        old = admin.store.principals.find_user(f"p{i}").password_hash
        client = str(ipaddress.ip_address("10.14.0.1") + i)
        kinds["password changed"].cases.append((
            "/staff", {"Authorization": basic(f"p{i}", "pw-1"), "X-Real-IP": client},
            ["users", "passwd", f"p{i}", "--password-stdin"], "pw-2\n",
            lambda r, name=f"p{i}", old=old: r.principals.find_user(name).password_hash != old))
        kinds["jti revoked"].cases.append((
            "/jwt", {"Authorization": f"Bearer {token(jti=f's{i}')}"}, ["tokens", "revoke", "--jti", f"s{i}"], None,
            lambda r, jti=f"s{i}": r.revocations.is_revoked("jti", jti, "https://idp.example")))
        leaf = PKI.leaf()
        (work / f"leaf-{i}.pem").write_bytes(leaf.pem)
        kinds["certificate revoked"].cases.append((
            "/cert", nginx_cert(leaf), ["certs", "revoke", "--file", str(work / f"leaf-{i}.pem")], None,
            lambda r, fp=leaf.sha256: r.certificates.is_revoked(fp, "", "")))
    servers = Servers()
    witness = serving_store(open_store(url, serving=True), 30)
    assert isinstance(witness, Replica)
    try:
        fleet = Fleet(servers, url, policy_dir, work)
        for kind in kinds.values():
            for path, headers, _, _, learnt in kind.cases:
                fleet.every_worker(path, headers, 200, timeout=60)
                assert not learnt(witness)
            for path, headers, command, stdin, learnt in kind.cases:
                cli(url, *command, input=stdin)
                watched: list[float] = []
                watcher = threading.Thread(target=_watch, args=(witness, learnt, time.monotonic(), watched))
                watcher.start()
                kind.answers.append(fleet.answers(path, headers, 401, timeout=30))
                watcher.join()
                kind.learnt.append(watched[0])
        return kinds
    finally:
        servers.stop()


def _watch(replica: Replica, learnt: Callable[[Replica], bool], since: float, out: list[float]) -> None:
    """Seconds from ``since`` until ``learnt(replica)`` (asked every millisecond, from memory)."""
    deadline = since + 30
    while not learnt(replica):
        assert time.monotonic() < deadline, "the replica never learnt of the change"
        time.sleep(0.001)
    out.append(time.monotonic() - since)


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


def report(parts: dict, n: int, shared: str) -> list[str]:
    """The section's lines for the parts that ran."""
    lines = ["## Replicas: PostgreSQL (issue 14)", "",
             f"Measured {time.strftime('%Y-%m-%d')} with `bench/replicas.py` (run by `make bench`) on the machine "
             f"above{shared}. A throwaway PostgreSQL (tests/pg.py, fsync off); three `authz serve --workers 2` "
             "instances. In-process `decide()` on the replica reads from memory, SQLite from its file.", ""]
    if "propagation" in parts:
        lines += [f"#### Propagation ({n} revocations of each kind; 3 instances x 2 workers)", "",
                  "From the CLI returning until every one of the 6 workers has refused the credential: every "
                  "worker asked at once (a thread each, on a kept-alive connection to it, one question after "
                  "another), each worker's time the arrival of its first refusal, the kind's the slowest "
                  "worker's (each password-changed user asks from its own client address). *Slowest "
                  "refusal took*: that worker's refusing request alone (for a password change, one Argon2id run "
                  "of the old password against the new hash: inherent, the worker cannot know otherwise). "
                  "*Replica learnt*: when a replica in the bench process, following the same change log "
                  "(LISTEN/NOTIFY, 0.5 s poll), had applied the change — the propagation alone. Earlier runs "
                  "asked the workers one after another on fresh connections (~20 ms of /proc lookup per "
                  "question, each reaching a worker of the kernel's choosing): they measured the probing, up to "
                  "2.2 s for a password change, not the propagation.", "",
                  "| kind | p50 ms | p99 ms | max ms | slowest refusal took p50 / p99 ms "
                  "| replica learnt p50 / p99 ms |", "|---|---:|---:|---:|---:|---:|"]
        for name, kind in parts["propagation"].items():
            seconds = [a.seconds for a in kind.answers]
            took = [a.slowest_took for a in kind.answers]
            lines.append(f"| {name} | {pct(seconds, 0.5) * 1000:.0f} | {pct(seconds, 0.99) * 1000:.0f} | "
                         f"{max(seconds) * 1000:.0f} | {pct(took, 0.5) * 1000:.0f} / {pct(took, 0.99) * 1000:.0f} "
                         f"| {pct(kind.learnt, 0.5) * 1000:.0f} / {pct(kind.learnt, 0.99) * 1000:.0f} |")
        slowest = max(a.seconds for kind in parts["propagation"].values() for a in kind.answers)
        lines += ["", f"Slowest of all {n * len(parts['propagation'])} revocations: {slowest * 1000:.0f} ms "
                  f"(target: every worker within 1 s of the CLI returning)."]
        lines.append("")
    if "outage" in parts:
        lines += ["#### Outage (AUTHZ_MAX_STALENESS=5; PostgreSQL stopped 10 s)", "",
                  "| phase | answers (credential, status: count) |", "|---|---|"]
        for phase, counts in parts["outage"].items():
            lines.append(f"| {phase} | {', '.join(f'{w} {s}: {c}' for (w, s), c in sorted(counts.items()))} |")
        lines.append("")
    if "decide" in parts:
        lines += ["#### In-process decide() p50 µs (best of 5 trials)", "",
                  "| credential | SQLite | PostgreSQL replica | ratio |", "|---|---:|---:|---:|"]
        for kind, (sqlite, postgres) in parts["decide"].items():
            lines.append(f"| {kind} | {sqlite:.1f} | {postgres:.1f} | {postgres / sqlite:.2f} |")
        lines.append("")
    if "flood" in parts:
        lines += ["#### Invalid-key flood, never-seen key", "",
                  ", ".join(f"{k}: {v:.2f}" if isinstance(v, float) else f"{k}: {v}"
                            for k, v in parts["flood"].items()), ""]
    if "copy" in parts:
        lines += ["#### db copy", "",
                  ", ".join(f"{k}: {v:.1f}" if isinstance(v, float) else f"{k}: {v}"
                            for k, v in parts["copy"].items()), ""]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer revocations, a smaller copy; print only")
    parser.add_argument("--only", choices=PARTS, action="append", help="run this part alone (repeatable); print only")
    parser.add_argument("-n", type=int, help="revocations of each kind (default 50, --quick 10)")
    parser.add_argument("--shared", default="", help="what else ran on the machine meanwhile (said in the report)")
    args = parser.parse_args()
    n = args.n or (10 if args.quick else 50)
    only = set(args.only or PARTS)
    bindir = pg.binaries()
    if bindir is None:
        print("PostgreSQL is not installed: `make servers`", file=sys.stderr)
        return 2
    cluster = pg.Cluster(bindir, free_port()).init()
    parts: dict = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            if "copy" in only:
                parts["copy"] = db_copy(cluster, work, 10_000 if args.quick else 100_000)
            if "flood" in only:
                parts["flood"] = flood(cluster)
            if "decide" in only:
                parts["decide"] = decide_p50(cluster, work / "d", 500 if args.quick else 2000)
            if "propagation" in only:
                parts["propagation"] = propagation(cluster, work / "p", n)
            if "outage" in only:
                parts["outage"] = outage(cluster, work / "o")
    finally:
        cluster.destroy()
    section = "\n".join(report(parts, n, f", {args.shared}" if args.shared else ""))
    print(section)
    if not args.quick and not args.only and args.n is None:
        replace_section("Replicas: PostgreSQL", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
