"""Password flood benchmark: what a flood of wrong passwords costs other credentials,
against a flood of unknown API keys (which needs no KDF) over as many connections.

    .venv/bin/python bench/flood.py            # adds/replaces "## Password flood" in bench/RESULTS.md
    .venv/bin/python bench/flood.py --quick    # shorter, prints only

gunicorn as in bench.py (2 sync workers). For each flood — 64 connections of unknown
API keys (the baseline), then 64 connections of wrong passwords (a different password
each request, for a real user and an unknown one alternately, from one client
address) — two probes run at the same time: valid API-key requests (``wrk -c4``) and
another user's Basic successes (``wrk -c2``; that user logged in before the flood, as
a user with a session has). Targets (issue 10): API-key p50 during the password flood
within 1.5x of the baseline's, the other user's Basic p99 within 100 ms.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from results import replace_section  # bench/, the script's directory

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from authz.admin import Admin  # noqa: E402
from bench import POLICY, machine, serve, setup  # noqa: E402

CONNECTIONS = 64
_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def lua_script(path: Path, uri: str, header: str, values: list[str]) -> Path:
    """A wrk script sending ``header`` with a different value each request."""
    table = ",\n".join(f'  "{v}"' for v in values)
    path.write_text(f"""
local values = {{
{table}
}}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", "/auth-request", {{
    ["X-Original-URI"] = "{uri}", ["X-Original-Method"] = "GET",
    ["{header}"] = values[(i % #values) + 1]}})
end
""")
    return path


def wrk(port: int, connections: int, seconds: int, headers: dict | None = None, script: Path | None = None,
        uri: str = "/v1/orders/42") -> subprocess.Popen:
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    if script is not None:
        args += ["-s", str(script)]
    for k, v in {"X-Original-URI": uri, "X-Original-Method": "GET", **(headers or {})}.items():
        args += ["-H", f"{k}: {v}"]
    return subprocess.Popen([*args, f"http://127.0.0.1:{port}/auth-request"], stdout=subprocess.PIPE, text=True)


def latency(out: str, percent: str) -> float:
    match = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
    if not match:
        raise RuntimeError(f"no {percent}% latency in wrk output:\n{out}")
    return float(match.group(1)) * _UNIT[match.group(2)]


def non2xx(out: str) -> int:
    match = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return int(match.group(1)) if match else 0


def requests_done(out: str) -> int:
    return int(re.search(r"(\d+) requests in", out).group(1))


def run(port: int, flood: tuple[Path, str], key: str, bob: str, seconds: int) -> dict:
    script, uri = flood
    flooding = wrk(port, CONNECTIONS, seconds + 2, script=script, uri=uri)
    time.sleep(1.0)  # the flood is on before the probes start
    keys = wrk(port, 4, seconds, {"X-API-Key": key})
    basics = wrk(port, 2, seconds, {"Authorization": bob}, uri="/admin/users")
    key_out, basic_out = keys.communicate()[0], basics.communicate()[0]
    flood_out = flooding.communicate()[0]
    if non2xx(key_out) or non2xx(basic_out):
        raise RuntimeError(f"probes were denied:\n{key_out}\n{basic_out}")
    if non2xx(flood_out) != requests_done(flood_out):
        raise RuntimeError(f"a flood request was allowed:\n{flood_out}")
    return {"key_p50": latency(key_out, "50"), "key_p99": latency(key_out, "99"),
            "basic_p99": latency(basic_out, "99"), "flood_requests": requests_done(flood_out)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="short run, print only")
    args = parser.parse_args()
    seconds = 5 if args.quick else 15
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        store, policy_dir, key, _ = setup(work)
        assert "staff" in POLICY["authenticators"]
        Admin(store).users.add("bob", "bob-pw", roles=["admin"])
        bob = basic("bob", "bob-pw")
        unknown_keys = lua_script(work / "keys.lua", "/v1/orders/42", "X-API-Key",
                                  [f"sk_live_{'U' * 35}{n:08d}" for n in range(2000)])
        wrong_passwords = lua_script(work / "passwords.lua", "/admin/users", "Authorization",
                                     [basic(("alice", "mallory")[n % 2], f"guess-{n}") for n in range(20000)])
        env = {**os.environ, "AUTHZ_DB": str(store.path), "AUTHZ_POLICY_DIR": str(policy_dir),
               "AUTHZ_DECISION_LOG": "off"}
        authz, port = serve("wsgi:app", env, ROOT)
        try:
            for _ in range(20):  # bob has a session: every worker verified his password once
                requests.get(f"http://127.0.0.1:{port}/auth-request", timeout=10, headers={
                    "X-Original-URI": "/admin/users", "X-Original-Method": "GET", "Authorization": bob,
                    "Connection": "close"})
            baseline = run(port, (unknown_keys, "/v1/orders/42"), key, bob, seconds)
            flood = run(port, (wrong_passwords, "/admin/users"), key, bob, seconds)
        finally:
            authz.terminate()
            authz.wait(10)
    ratio = flood["key_p50"] / baseline["key_p50"]
    lines = [
        "## Password flood", "",
        f"Machine: {machine()}. Measured {time.strftime('%Y-%m-%d')} with `bench/flood.py` "
        f"(gunicorn as above; {seconds} s per flood). {CONNECTIONS} connections flood authz while two "
        "probes run: valid API keys (`wrk -c4`) and another user's Basic successes (`wrk -c2`, logged "
        "in before the flood). Baseline flood: unknown API keys (no KDF); password flood: a different "
        "wrong password each request, a real and an unknown user alternately, one client address. "
        "Targets: API-key p50 within 1.5x of the baseline, the other user's Basic p99 within 100 ms.", "",
        "| flood (64 connections) | flood req | API-key p50 ms | API-key p99 ms | other user's Basic p99 ms |",
        "|---|---:|---:|---:|---:|",
        *[f"| {name} | {r['flood_requests']} | {r['key_p50'] * 1000:.1f} | {r['key_p99'] * 1000:.1f} | "
          f"{r['basic_p99'] * 1000:.1f} |" for name, r in (("unknown API keys (baseline)", baseline),
                                                         ("wrong passwords", flood))], "",
        f"API-key p50 during the password flood: {ratio:.2f}x the baseline's (target ≤ 1.5x); "
        f"other user's Basic p99: {flood['basic_p99'] * 1000:.0f} ms (target ≤ 100 ms).", "",
    ]
    section = "\n".join(lines)
    print(section)
    if not args.quick:
        replace_section("Password flood\n", section)


if __name__ == "__main__":
    main()
