"""The decision log: one JSON object per line per decision — denies always, allows
sampled (``AUTHZ_DECISION_LOG_ALLOW_SAMPLE``) — to stderr, a file, or nowhere
(``AUTHZ_DECISION_LOG``). It names the credential by key id or certificate
fingerprint, never by its secret.

Lines are buffered and written whole, at most ``FLUSH_SECONDS`` apart (and at exit):
a write per decision would cost more than the decision. Each write holds complete
lines only, so workers appending to one file never interleave inside a line.
"""

from __future__ import annotations

import atexit
import json
import os
import random
import threading
import time
import weakref
from datetime import UTC, datetime

from authz.decision import Decision
from authz.request import CheckRequest

FLUSH_SECONDS = 0.5
MAX_BUFFER = 64 * 1024


class DecisionLog:
    def __init__(self, target: str = "stderr", allow_sample: float = 1.0) -> None:
        self.enabled = target != "off"
        self.allow_sample = allow_sample
        self.target = target
        self._fd: int | None = None
        self._buffer: list[str] = []
        self._size = 0
        self._lock = threading.Lock()
        self._flusher_pid: int | None = None
        ref = weakref.ref(self)
        atexit.register(lambda: (log := ref()) and log.flush())

    def _open(self) -> int:
        if self._fd is None:
            self._fd = 2 if self.target == "stderr" else os.open(
                self.target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        return self._fd

    def record(self, decision: Decision, request: CheckRequest | None, request_id: str | None,
               started: float) -> None:
        if not self.enabled or (decision.allowed and random.random() >= self.allow_sample):
            return
        principal = decision.principal
        entry = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
            "request_id": request_id,
            "route": decision.route,
            "decision": "allow" if decision.allowed else "deny",
            "status": decision.status,
            "reason": str(decision.reason) if decision.reason else None,
            "detail": decision.detail or None,
            "principal": principal.id if principal else None,
            "methods": decision.methods,
            "credential": next((i.credential for i in decision.identities if i.credential), None),
            "client_ip": str(request.client_ip) if request is not None and request.client_ip else None,
            "method": request.method if request is not None else None,
            "path": request.path if request is not None else None,
            "latency_us": int((time.perf_counter() - started) * 1_000_000),
            "policy_revision": decision.policy_revision,
        }
        line = json.dumps(entry, separators=(",", ":")) + "\n"
        with self._lock:
            self._buffer.append(line)
            self._size += len(line)
            full = self._size >= MAX_BUFFER
        if full:
            self.flush()
        elif self._flusher_pid != os.getpid():
            self._start_flusher()

    def _start_flusher(self) -> None:
        with self._lock:
            if self._flusher_pid == os.getpid():
                return
            self._flusher_pid = os.getpid()
            self._fd = None if self.target != "stderr" else self._fd
        threading.Thread(target=self._flush_periodically, name="authz-decision-log", daemon=True).start()

    def _flush_periodically(self) -> None:
        while True:
            time.sleep(FLUSH_SECONDS)
            self.flush()

    def flush(self) -> None:
        with self._lock:
            lines, self._buffer, self._size = self._buffer, [], 0
        if not lines:
            return
        data = "".join(lines).encode()
        try:
            fd = self._open()
            while data:
                written = os.write(fd, data)
                data = data[written:]
        except OSError:
            pass  # the log must never break decisions; nothing else to tell it to
