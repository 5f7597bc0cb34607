"""Issue 15's store-side numbers for expiry warnings, with 1,000,000 keys.

    .venv/bin/python bench/expiry.py              # adds/replaces "## Expiry warnings" in bench/RESULTS.md
    .venv/bin/python bench/expiry.py -n 100000    # another size; prints only

On SQLite and on a throwaway PostgreSQL (tests/pg.py), ``n`` keys are inserted in bulk
over 1,000 principals, with expiries spread evenly over the next 365 days (one key in
ten without expiry, one in twenty revoked, one in twenty deprecated; PostgreSQL vacuumed
after the load, as autovacuum would, so that counts read the index alone). Then, the median
of repeated runs of:

- the gauge: ``keys.count_expiring(now, (7 d, 30 d))``, what a ``/metrics`` scrape
  reads (kept 15 s per process, so at most that often per worker);
- a scan tick: ``expiry.events_between`` over 10 s (``AUTHZ_WEBHOOK_INTERVAL``'s
  default), the four narrow ranges one process reads per tick;
- a catch-up after a day of downtime: ``events_between`` over one day;
- ``authz keys expiring --within 14d``: ``KeyAdmin.expiring`` (rows listed).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results import replace_section  # noqa: E402  (bench/, the script's directory)

from authz.admin import Admin  # noqa: E402
from authz.store import open_store  # noqa: E402
from authz.webhooks import expiry  # noqa: E402
from tests import pg  # noqa: E402
from tests.conftest import free_port  # noqa: E402

DAY = 86400.0
COLUMNS = ("id", "principal_id", "hash", "display", "env", "scopes", "allow_ips", "status", "created_at",
           "expires_at", "revoked_at", "replaced_by")


def rows(n: int, now: float, principal_ids: list[int]):
    rng = random.Random(15)
    for i in range(n):
        roll = rng.random()
        expires = None if roll < 0.1 else now + rng.uniform(60, 365 * DAY)
        status = "revoked" if roll > 0.95 else "deprecated" if roll > 0.9 else "active"
        yield (f"key_bench{i:011d}", principal_ids[i % len(principal_ids)], f"{rng.getrandbits(256):064x}",
               "sk_live_AbCd…wxYz", "live", "orders:read", "", status, now - DAY, expires,
               now - 60 if status == "revoked" else None, None)


def fill(store, n: int, now: float, backend: str) -> float:
    admin = Admin(store)
    for p in range(1000):
        admin.keys.create(f"partner-{p}")  # the principals (and one real key each)
    started = time.perf_counter()
    if backend == "sqlite":
        ids = [r[0] for r in store.database.execute("SELECT id FROM principals").fetchall()]
        with store.database.write() as db:
            db.conn.executemany(f"INSERT INTO api_keys ({', '.join(COLUMNS)}) "  # noqa: S608 — constant
                                f"VALUES ({', '.join('?' * len(COLUMNS))})", rows(n, now, ids))
    else:
        ids = [r[0] for r in store.database.query("SELECT id FROM principals")]
        with store.database.connection() as conn, conn.cursor() as cursor, cursor.copy(
                f"COPY api_keys ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for row in rows(n, now, ids):
                copy.write_row(row)
        with store.database.connection() as conn:  # what autovacuum does after a bulk load
            conn.execute("VACUUM ANALYZE api_keys")
    return time.perf_counter() - started


def median_ms(func: Callable[[], object], repeat: int) -> tuple[float, object]:
    result = func()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000, result


def measure(store, now: float) -> dict[str, tuple[float, str]]:
    admin = Admin(store)
    out = {}
    ms, counts = median_ms(lambda: store.keys.count_expiring(now, (7 * DAY, 30 * DAY)), 20)
    out["gauge: count_expiring(7 d, 30 d)"] = (ms, f"{counts[0]:,} / {counts[1]:,} keys")
    ms, found = median_ms(lambda: expiry.events_between(store.keys, now + 3600, now + 3610), 50)
    out["scan tick: 10 s span"] = (ms, f"{len(found)} events")
    ms, found = median_ms(lambda: expiry.events_between(store.keys, now + 3600, now + 3600 + DAY), 3)
    out["catch-up: 1 day span"] = (ms, f"{len(found):,} events")
    ms, listed = median_ms(lambda: admin.keys.expiring(14 * DAY, now=now), 3)
    out["keys expiring --within 14d"] = (ms, f"{len(listed):,} rows")
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=1_000_000)
    args = parser.parse_args()
    now = time.time()
    results: dict[str, dict] = {}
    fills: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = open_store(Path(tmp) / "expiry.db")
        sqlite.migrate()
        fills["SQLite"] = fill(sqlite, args.n, now, "sqlite")
        results["SQLite"] = measure(sqlite, now)
        bindir = pg.binaries()
        if bindir is not None:
            cluster = pg.Cluster(bindir, free_port()).init()
            try:
                store = open_store(cluster.database())
                store.migrate()
                fills["PostgreSQL"] = fill(store, args.n, now, "postgresql")
                results["PostgreSQL"] = measure(store, now)
                store.close()
            finally:
                cluster.destroy()
    lines = ["## Expiry warnings (issue 15)", "",
             f"{args.n:,} keys inserted in bulk over 1,000 principals ("
             + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in fills.items())
             + "), expiries spread over 365 days (10 % none, 5 % revoked, 5 % deprecated); "
             "medians of repeated runs, in one process. The scan reads four narrow ranges of the "
             "`(expires_at, status)` index per tick, never every key inside 30 days.", "",
             "| operation | " + " | ".join(f"{name} ms" for name in results) + " | result |",
             "|---|" + "---:|" * len(results) + "---|"]
    for operation in next(iter(results.values())):
        cells = " | ".join(f"{results[name][operation][0]:.2f}" for name in results)
        lines.append(f"| {operation} | {cells} | {next(iter(results.values()))[operation][1]} |")
    section = "\n".join(lines) + "\n"
    print(section)
    if args.n == 1_000_000:
        replace_section("Expiry warnings", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
