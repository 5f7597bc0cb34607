"""The decision log: one JSON object per line per decision — denies always, allows
sampled (``AUTHZ_DECISION_LOG_ALLOW_SAMPLE``) — to stderr, a file, or nowhere
(``AUTHZ_DECISION_LOG``). It names the credential by key id or certificate
fingerprint, never by its secret.

Lines are buffered and written whole, at most ``FLUSH_SECONDS`` apart (and at exit):
a write per decision would cost more than the decision. Each write holds complete
lines only, so workers appending to one file never interleave inside a line; writes
to a file hold an exclusive ``flock`` and a write cut short (a full disk) is cut back
to its last whole line, so every line is whole or absent. Lines that cannot be
written are dropped, counted in
``authz_decision_log_dropped_total`` and reported on stderr once per episode.

Events that are no decision (an API key anomaly, noticed in a background thread) are
lines of the same log with an ``event`` field instead of ``decision`` (``_event_line``).

Client-supplied values are bounded: a request id must be 1 to 128 characters of
``[A-Za-z0-9._:-]`` (nginx ``$request_id``, UUIDs, Envoy and Traefik ids); any other is
replaced by a fresh one and the line says so (``request_id_replaced``). Paths are cut
at ``MAX_PATH`` characters.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import re
import sys
import threading
import time
import uuid
import weakref

from authz.background import ProcessThread, at_exit
from authz.decision import Decision
from authz.observability import metrics
from authz.request import CheckRequest, ip_text

FLUSH_SECONDS = 0.5
MAX_BUFFER = 64 * 1024
MAX_PATH = 1024
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

# The line is written by hand rather than by json.dumps of a dict (a third of the cost of
# logging a decision): every string goes through json's own C escaper, the one json.dumps
# uses (ASCII output, so no byte of a client-supplied value is written raw), and the
# timestamp's seconds are formatted once per second. A test compares the lines with
# json.dumps on hostile values.
_quote = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]
_second: tuple[int, str] = (0, "")


def _text(value: str | None) -> str:
    return "null" if value is None else _quote(value)


def _timestamp() -> str:
    """UTC, milliseconds: ``2026-12-04T04:12:00.123Z``."""
    global _second
    now = time.time()
    second = int(now)
    if _second[0] != second:
        _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{_second[1]}.{int((now - second) * 1000):03d}Z"


def _line(decision: Decision, request: CheckRequest | None, request_id: str | None, started: float) -> str:
    """One decision as a JSON line (keys in a fixed order; see ``_quote`` above)."""
    replaced = request_id is not None and not _REQUEST_ID.fullmatch(request_id)
    if replaced:
        request_id = uuid.uuid4().hex
    principal = decision.principal
    credential = next((i.credential for i in decision.identities if i.credential), None)
    client_ip = ip_text(request.client_ip) if request is not None and request.client_ip else None
    path = request.path if request is not None else None
    if path is not None and len(path) > MAX_PATH:
        path = path[:MAX_PATH] + "…"
    return "".join((
        '{"ts":"', _timestamp(),
        '","request_id":', _text(request_id),
        ',"route":', _text(decision.route),
        ',"decision":', '"allow"' if decision.allowed else '"deny"',
        ',"status":', str(int(decision.status)),
        ',"reason":', _text(str(decision.reason) if decision.reason else None),
        ',"detail":', _text(decision.detail or None),
        ',"principal":', _text(principal.id if principal else None),
        ',"methods":[', ",".join(map(_quote, decision.methods)),
        '],"credential":', _text(credential),
        ',"client_ip":', _text(client_ip),
        ',"method":', _text(request.method if request is not None else None),
        ',"path":', _text(path),
        ',"latency_us":', str(int((time.perf_counter() - started) * 1_000_000)),
        ',"policy_revision":', _text(decision.policy_revision),
        ',"request_id_replaced":true}\n' if replaced else "}\n",
    ))


def _event_line(event: str, fields: tuple[tuple[str, str | float | None], ...]) -> str:
    """An event that is no decision (``api_key.anomaly``): ``ts``, ``event``, then the
    event's fields in their order (names are ours, values escaped as in ``_line``).
    Readers tell the two apart by ``event``, which a decision line never has."""
    parts = ['{"ts":"', _timestamp(), '","event":', _quote(event)]
    for name, value in fields:
        parts += [',"', name, '":', _text(value) if value is None or isinstance(value, str) else repr(value)]
    parts.append("}\n")
    return "".join(parts)


class DecisionLog:
    def __init__(self, target: str = "stderr", allow_sample: float = 1.0) -> None:
        self.enabled = target != "off"
        self.allow_sample = allow_sample
        self.target = target
        self._fd: int | None = None
        self._buffer: list[str] = []
        self._size = 0
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()  # one flush at a time: truncation must see its own write
        self._episode_drops = 0
        self._error: str | None = None
        self._flusher = ProcessThread("authz-decision-log", self.flush, FLUSH_SECONDS, prepare=self._prepare)

    def _open(self) -> int:
        if self._fd is None:
            self._fd = 2 if self.target == "stderr" else os.open(
                self.target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        return self._fd

    def record(self, decision: Decision, request: CheckRequest | None, request_id: str | None,
               started: float) -> None:
        if not self.enabled or (decision.allowed and random.random() >= self.allow_sample):
            return
        self._append(_line(decision, request, request_id, started))

    def event(self, event: str, *fields: tuple[str, str | float | None]) -> None:
        """Log an event line (always, as denies are): a background thread's finding, not a request's."""
        if not self.enabled:
            return
        self._append(_event_line(event, fields))

    def _append(self, line: str) -> None:
        with self._lock:
            self._buffer.append(line)
            self._size += len(line)
            full = self._size >= MAX_BUFFER
        if full:
            self.flush()
        elif not self._flusher.started:
            self._flusher.ensure_started()

    def _prepare(self) -> None:
        """In each process that logs: open the file again rather than share the parent's
        descriptor, and write what is buffered as the process ends (a granian worker too)."""
        with self._lock:
            self._fd = None if self.target != "stderr" else self._fd
        ref = weakref.ref(self)
        at_exit(lambda: (log := ref()) and log.flush())

    def flush(self) -> None:
        with self._write_lock:
            with self._lock:
                lines, self._buffer, self._size = self._buffer, [], 0
            if not lines:
                return
            written = self._write(lines)
            if written < len(lines):
                self._dropped(len(lines) - written, self._error)
            elif self._episode_drops:
                print(f"authz: decision log {self.target}: writing again after dropping "
                      f"{self._episode_drops} line(s)", file=sys.stderr, flush=True)
                self._episode_drops = 0

    def _write(self, lines: list[str]) -> int:
        """Append whole lines; how many were written. Never leaves part of a line."""
        data = "".join(lines).encode()
        try:
            fd = self._open()
        except OSError as exc:
            self._error = exc.strerror or str(exc)
            return 0
        is_file = fd != 2
        try:
            if is_file:
                fcntl.flock(fd, fcntl.LOCK_EX)  # other workers append between our writes, not inside
            start = os.lseek(fd, 0, os.SEEK_END) if is_file else 0
            done = 0
            try:
                while done < len(data):
                    done += os.write(fd, data[done:])
            except OSError as exc:
                self._error = exc.strerror or str(exc)
                whole = data.rfind(b"\n", 0, done) + 1  # bytes of whole lines written
                if is_file and whole < done:
                    os.ftruncate(fd, start + whole)  # cut the torn line: whole or absent
                return data.count(b"\n", 0, whole)
            return len(lines)
        except OSError as exc:
            self._error = exc.strerror or str(exc)
            return 0
        finally:
            if is_file:
                with contextlib.suppress(OSError):
                    fcntl.flock(fd, fcntl.LOCK_UN)

    def _dropped(self, count: int, why: str | None) -> None:
        metrics.decision_log_dropped(count)
        if not self._episode_drops:
            print(f"authz: decision log {self.target}: cannot write ({why}); dropping lines "
                  "until it works again (counted in authz_decision_log_dropped_total)",
                  file=sys.stderr, flush=True)
        self._episode_drops += count
