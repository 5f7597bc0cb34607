"""Operators (issue 10, point 6): every CLI command turns a store fault into one line
and a non-zero exit (a locked store after a bounded wait: "store is locked by another
process"); the CLI never touches the metrics' multi-process state; authz's log lines
go to the server's error log."""

import os
import resource
import signal
import sqlite3
import subprocess
import time

import pytest

from tests.conftest import BIN, write_policy

pytestmark = pytest.mark.both_stores

COMMANDS = [("keys", "list"), ("keys", "create", "--principal", "p"), ("users", "disable", "nobody"),
            ("tokens", "revoke", "--jti", "j1"), ("keys", "revoke", "key_x")]


def run(store_path, *args, env=None, preexec_fn=None, timeout=60):
    return subprocess.run([str(BIN / "authz"), "--db", str(store_path), *args], capture_output=True, text=True,
                          timeout=timeout, check=False, env={**os.environ, **(env or {})}, preexec_fn=preexec_fn)


def one_line_failure(result) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.sqlite_only("another process holding SQLite's write lock")
def test_a_locked_store_waits_a_bounded_time_then_says_so(store):
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process is writing
    try:
        started = time.monotonic()
        line = one_line_failure(run(store.path, "keys", "create", "--principal", "p"))
        assert "store is locked by another process" in line
        assert time.monotonic() - started < 30
    finally:
        holder.execute("ROLLBACK")
        holder.close()


@pytest.mark.sqlite_only("the SQLite file overwritten")
@pytest.mark.parametrize("args", COMMANDS)
def test_a_corrupted_store_is_one_line(store, args):
    with sqlite3.connect(store.path) as conn:  # everything in the main file, nothing left in the WAL
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with open(store.path, "r+b") as f:
        f.seek(0)
        f.write(os.urandom(8192))
    line = one_line_failure(run(store.path, *args))
    assert str(store.path) in line


@pytest.mark.sqlite_only("SQLite's file and WAL at the size limit")
def test_a_full_disk_is_one_line(store):
    files = [f"{store.path}{suffix}" for suffix in ("", "-wal")]
    size = max(os.path.getsize(f) for f in files if os.path.exists(f)) + 1

    def full():  # a file size limit acts as a full disk (short write, then EFBIG)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    for i in range(5):
        result = run(store.path, "keys", "create", "--principal", f"p{i}" * 90, preexec_fn=full)
        if result.returncode != 0:
            break
    line = one_line_failure(result)
    assert "credential store" in line


@pytest.mark.sqlite_only("a missing SQLite file is not created")
def test_a_missing_store_is_never_created(tmp_path):
    missing = tmp_path / "nowhere.db"
    for args in COMMANDS:
        one_line_failure(run(missing, *args))
    assert not missing.exists()


def test_the_cli_never_touches_metrics_state(store, tmp_path):
    gone = tmp_path / "no-such-dir"
    result = run(store.url, "keys", "create", "--principal", "p", env={"PROMETHEUS_MULTIPROC_DIR": str(gone)})
    assert result.returncode == 0, result.stderr
    present = tmp_path / "prom"
    present.mkdir()
    for args in COMMANDS[:2]:
        run(store.url, *args, env={"PROMETHEUS_MULTIPROC_DIR": str(present)})
    assert list(present.iterdir()) == []
    assert not gone.exists()


def test_authz_log_lines_go_to_the_servers_error_log(store, policy_dir, gunicorn, tmp_path):
    write_policy(policy_dir, {"authenticators": {"public": {"type": "anonymous"}},
                              "routes": [{"id": "r", "require": "public"}]})
    error_log = tmp_path / "error.log"
    server = gunicorn(workers=1, error_log=error_log)
    import requests

    requests.get(server.url + "/readyz", timeout=5)
    (policy_dir / "policy.json").write_text("{ broken")
    deadline = time.monotonic() + 10
    while "policy reload failed" not in error_log.read_text():
        assert time.monotonic() < deadline, error_log.read_text()
        requests.get(server.url + "/readyz", timeout=5)
        time.sleep(0.2)
    assert "policy reload failed" not in server.output()  # not on the process's stderr
