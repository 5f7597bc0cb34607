"""``authz serve``: granian by default, gunicorn on request; metrics that add up however
authz is started; keep-alive from nginx; a clean refusal to start."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from authz.admin import Admin
from authz.observability.metrics import FLUSH_SECONDS
from tests.conftest import BIN, ROOT, free_port, gunicorn_env, start_nginx, write_policy

pytestmark = pytest.mark.both_stores

POLICY = json.loads((ROOT / "policies" / "api.json").read_text())


def decisions_total(url: str) -> float:
    """Summed over the workers, once each has written its batch (metrics.FLUSH_SECONDS)."""
    time.sleep(2 * FLUSH_SECONDS + 0.1)
    text = requests.get(url + "/metrics", timeout=5).text
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == "authz_decisions_total")


def ask(url: str, key: str | None = None, session=None) -> requests.Response:
    headers = {"X-Original-URI": "/v1/orders/1", "X-Original-Method": "GET"}
    if key:
        headers["X-API-Key"] = key
    return (session or requests).get(url + "/auth-request", headers=headers, timeout=5)


@pytest.fixture
def serve(servers, store, policy_dir, tmp_path):
    write_policy(policy_dir, POLICY)

    def start(*args: str, env: dict | None = None):
        port = free_port()
        environment = gunicorn_env(store, policy_dir, **(env or {}))
        environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
        server = servers([str(BIN / "authz"), "serve", "--bind", f"127.0.0.1:{port}", *args], port,
                         env=environment, log=tmp_path / f"serve-{port}.log")
        return server.wait()

    return start


@pytest.mark.parametrize("args", [[], ["--server", "gunicorn"]], ids=["granian", "gunicorn"])
def test_metrics_add_up_over_workers(serve, store, args):
    _, key = Admin(store).keys.create("partner-a", ["orders:read"])
    server = serve("--workers", "3", *args)
    before = decisions_total(server.url)
    for _ in range(60):  # a new connection each time: the requests spread over workers
        assert ask(server.url, key).status_code == 200
    counts = [decisions_total(server.url) - before for _ in range(3)]
    assert counts == [60, 60, 60]


def test_plain_gunicorn_metrics_add_up_without_any_setting(servers, store, policy_dir, tmp_path):
    """`gunicorn -w 3 wsgi:app` as the README once showed, no PROMETHEUS_MULTIPROC_DIR:
    authz shares the samples between the workers itself."""
    write_policy(policy_dir, POLICY)
    port = free_port()
    env = gunicorn_env(store, policy_dir)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    server = servers([str(BIN / "gunicorn"), "-w", "3", "-b", f"127.0.0.1:{port}", "wsgi:app"], port, env=env,
                     log=tmp_path / "gunicorn.log").wait()
    before = decisions_total(server.url)
    for _ in range(60):
        ask(server.url)
    assert [decisions_total(server.url) - before for _ in range(3)] == [60, 60, 60]


def test_refuses_to_start_on_a_broken_policy(store, policy_dir, tmp_path):
    (policy_dir / "broken.json").write_text('{"routes": [{"id": "x"}]}')
    env = gunicorn_env(store, policy_dir)
    result = subprocess.run([str(BIN / "authz"), "serve", "--bind", f"127.0.0.1:{free_port()}"], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
    assert "refusing to start" in result.stderr and "broken.json" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_process_variable_reads_as_a_request_header(serve, store, tmp_path):
    """granian copies the process environment into every request's environ: a variable
    named like a header must not become one."""
    pki_free_cert = "-----BEGIN CERTIFICATE-----%0Aforged%0A-----END CERTIFICATE-----"
    server = serve("--workers", "1", env={"HTTP_X_API_KEY": "sk_live_" + "a" * 43,
                                          "HTTP_X_SSL_CLIENT_CERT": pki_free_cert,
                                          "HTTP_X_SSL_CLIENT_VERIFY": "SUCCESS"})
    r = ask(server.url)
    assert (r.status_code, r.headers["X-Auth-Reason"]) == (401, "credentials_missing")


def children(pid: int) -> set[int]:
    found = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        text = open(f"/proc/{pid}/task/{task}/children").read()  # noqa: SIM115
        found |= {int(p) for p in text.split()}
    return found


def test_sighup_and_sigterm(serve, store, policy_dir):
    _, key = Admin(store).keys.create("partner-a", ["orders:read"])
    server = serve("--workers", "2")
    assert ask(server.url, key).status_code == 200
    # A policy edit, then SIGHUP: the workers are restarted and serve the new revision.
    changed = json.loads(json.dumps(POLICY))
    for route in changed["routes"]:
        if route["id"] == "orders-read":
            route["require"] = {"use": "partner_key", "scopes": ["orders:admin"]}
    write_policy(policy_dir, changed)
    old_workers = children(server.proc.pid)
    os.kill(server.proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # granian replaces every worker, one by one
        current = children(server.proc.pid)
        if len(current) == 2 and not current & old_workers:
            break
        time.sleep(0.1)
    assert len(current) == 2 and not current & old_workers, (old_workers, current)
    deadline, streak = time.monotonic() + 20, 0
    while streak < 10 and time.monotonic() < deadline:  # every worker, restarted, on the new revision
        try:
            streak = streak + 1 if ask(server.url, key).status_code == 403 else 0
        except requests.ConnectionError:
            streak = 0
        time.sleep(0.05)
    assert streak == 10
    assert server.proc.poll() is None
    # SIGTERM with a stream of requests in flight: every request that got in is answered.
    results: list[object] = []
    stop = threading.Event()

    def load() -> None:
        session = requests.Session()
        while not stop.is_set():
            try:
                results.append(ask(server.url, key, session).status_code)
            except requests.ConnectionError:
                results.append("refused")
                return

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    os.kill(server.proc.pid, signal.SIGTERM)  # as systemd does with KillMode=mixed
    assert server.proc.wait(20) == 0
    stop.set()
    for thread in threads:
        thread.join(10)
    answered = [r for r in results if r != "refused"]
    assert len(answered) > 20 and set(answered) == {403}


class CountingRelay:
    """A TCP relay between nginx and authz that counts the connections nginx opens."""

    def __init__(self, target_port: int) -> None:
        self.accepted = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.target = target_port
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()


def test_nginx_keeps_its_connections_to_authz(serve, store, servers, tmp_path):
    _, key = Admin(store).keys.create("partner-a", ["orders:read"])
    authz = serve("--workers", "2")
    relay = CountingRelay(authz.port)
    port, upstream = free_port(), free_port()
    site = ((ROOT / "deploy" / "nginx" / "authz.conf").read_text()
            .replace("listen 80", f"listen 127.0.0.1:{port}")
            .replace("127.0.0.1:8080", f"127.0.0.1:{relay.port}")
            .replace("127.0.0.1:9000", f"127.0.0.1:{upstream}"))
    site += f"\nserver {{ listen 127.0.0.1:{upstream}; location / {{ return 200 'ok'; }} }}\n"
    nginx = start_nginx(servers, tmp_path, site, port)
    session = requests.Session()
    deadline = time.monotonic() + 20
    while True:
        try:
            session.get(nginx.url + "/healthz", headers={"Host": "api.example.com"}, timeout=2)
            break
        except requests.ConnectionError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    before = relay.accepted
    statuses = [session.get(nginx.url + "/v1/orders/1", timeout=5,
                            headers={"Host": "api.example.com", "X-API-Key": key}).status_code for _ in range(200)]
    relay.close()
    assert statuses == [200] * 200
    assert relay.accepted - before <= 4, relay.accepted - before  # 200 subrequests, a handful of connections
