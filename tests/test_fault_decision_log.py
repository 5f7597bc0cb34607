"""Decision log (issue 10, point 5): request ids are validated and bounded, every line
is whole or absent even when the disk fills up mid-write, dropped lines are counted
(``authz_decision_log_dropped_total``) and reported once per episode on stderr."""

import json
import re
import subprocess
import sys
import textwrap
import time

import pytest
import requests

from authz.decision import Decision, Reason
from authz.observability.decision_log import DecisionLog
from authz.request import CheckRequest
from tests.conftest import ROOT, write_policy


def lines_of(path) -> list[dict]:
    text = path.read_text()
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]  # each line whole JSON


def test_request_ids_are_validated_and_bounded(tmp_path):
    path = tmp_path / "d.log"
    log = DecisionLog(str(path))
    deny = Decision.deny(401, Reason.CREDENTIALS_INVALID, "x")
    request = CheckRequest.build("GET", "/" + "p" * 5000, "h")
    good = ["0f8e2b1c9d7a4e3f5a6b7c8d9e0f1a2b", "3f2c8a8e-5d7b-4b1e-9a0f-1c2d3e4f5a6b", "req-1.2:3"]
    bad = ["x" * 7000, "bad id with spaces", "nl\ninjected", "", "é"]
    for request_id in good + bad:
        log.record(deny, request, request_id, time.perf_counter())
    log.flush()
    entries = lines_of(path)
    assert [e["request_id"] for e in entries[:3]] == good
    for entry in entries[3:]:
        assert entry["request_id_replaced"] is True and len(entry["request_id"]) == 32
    assert max(len(line) for line in path.read_text().splitlines()) < 2000  # the client does not size a line


def test_a_full_disk_leaves_whole_lines_counts_drops_and_says_so_once(tmp_path):
    """RLIMIT_FSIZE cuts writes short exactly as a full disk does (a short write, then
    EFBIG), in a process of its own."""
    script = textwrap.dedent(f"""
        import json, resource, signal, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from authz.observability import metrics
        from authz.decision import Decision, Reason
        from authz.observability.decision_log import DecisionLog
        from authz.request import CheckRequest
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        path = {str(tmp_path / "d.log")!r}
        log = DecisionLog(path)
        deny = Decision.deny(401, Reason.CREDENTIALS_INVALID, "x")
        request = CheckRequest.build("GET", "/v1/orders", "h")
        resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, resource.RLIM_INFINITY))
        for round in range(5):
            for i in range(40):
                log.record(deny, request, f"r{{round}}-{{i}}", time.perf_counter())
            log.flush()
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        log.record(deny, request, "after", time.perf_counter())
        log.flush()
        print(json.dumps(metrics.DECISION_LOG_DROPPED._value.get()))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    entries = lines_of(tmp_path / "d.log")  # no torn or concatenated line
    written = len(entries)
    assert 0 < written < 200 and entries[-1]["request_id"] == "after"
    assert float(result.stdout.strip()) == 200 - (written - 1)  # every line either written or counted
    assert result.stderr.count("cannot write") == 1, result.stderr  # once per episode
    assert result.stderr.count("writing again after dropping") == 1


def test_a_long_request_id_through_a_server(store, policy_dir, server, tmp_path):
    write_policy(policy_dir, {"authenticators": {"key": {"type": "api_key"}},
                              "routes": [{"id": "r", "require": "key"}]})
    log = tmp_path / "decisions.log"
    server = server(workers=1, AUTHZ_DECISION_LOG=str(log))
    for _ in range(20):
        r = requests.get(server.url + "/auth-request", timeout=5, headers={
            "X-Original-Method": "GET", "X-Original-URI": "/x", "X-Request-ID": "A" * 7000})
        assert r.status_code == 401
    time.sleep(1.0)
    entries = lines_of(log)
    assert len(entries) == 20 and all(e["request_id_replaced"] for e in entries)
    assert log.stat().st_size < 20 * 1000


def _by_json_dumps(decision, request, request_id, latency_us):
    """The line as json.dumps wrote it before it was written by hand (the reference)."""
    principal = decision.principal
    entry = {
        "request_id": request_id, "route": decision.route,
        "decision": "allow" if decision.allowed else "deny", "status": decision.status,
        "reason": str(decision.reason) if decision.reason else None, "detail": decision.detail or None,
        "principal": principal.id if principal else None, "methods": decision.methods,
        "credential": next((i.credential for i in decision.identities if i.credential), None),
        "client_ip": str(request.client_ip) if request is not None and request.client_ip else None,
        "method": request.method if request is not None else None,
        "path": request.path if request is not None else None,
        "latency_us": latency_us, "policy_revision": decision.policy_revision,
    }
    return entry


HOSTILE = ['"', "\\", "\n", "\r\x00\x1f", "\u2028\u2029", "é", "😀", "</script>", '","decision":"allow', "\x7f\x85"]


@pytest.mark.parametrize("value", HOSTILE)
def test_a_hand_written_line_is_what_json_dumps_would_write(value):
    """Each line is one JSON object whose values are exactly the decision's, whatever
    the strings hold; output is ASCII (json's own escaper), one line."""
    import ipaddress

    from authz.decision import Decision, Identity, IdentityKind, Reason
    from authz.observability.decision_log import _line
    from authz.request import CheckRequest

    request = CheckRequest.build("GET", "/caf%C3%A9/x", "h", client_ip=ipaddress.ip_address("::1"))
    identity = Identity(id="user" + value, kind=IdentityKind.USER, method="basic", authenticator="b",
                        credential="cred" + value)
    for decision in (Decision(True, 200, route="r" + value, identities=[identity], methods=["basic", value],
                              policy_revision="abc"),
                     Decision(False, 403, Reason.BAD_REQUEST, detail="d" + value)):
        for request_id in ("req-1", "bad id" + value, None):
            line = _line(decision, request, request_id, time.perf_counter())
            assert line.endswith("}\n") and line.count("\n") == 1 and line.isascii()
            parsed = json.loads(line)
            expected = _by_json_dumps(decision, request, parsed["request_id"], parsed["latency_us"])
            if request_id is not None and request_id != "req-1":
                expected["request_id_replaced"] = True
                assert parsed["request_id"] != request_id
            assert {k: v for k, v in parsed.items() if k != "ts"} == expected
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", parsed["ts"])
