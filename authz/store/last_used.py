"""Last use and usage of API keys, recorded without a write per request (any backend).

**The hot path.** ``record(key_id)`` stores the time in a dict (one ``STORE_SUBSCR``,
atomic under the GIL: a use racing the flusher's swap lands in the next batch or, at
worst, is written a moment late by a later use — harmless for a "last use" time).
``count(...)`` appends one tuple to a ``collections.deque``: ``deque.append`` is
atomic and documented thread-safe (under the GIL and in free-threaded builds alike), so
the request threads of a worker (granian's blocking threads, gunicorn's gthreads)
never take a lock, and no count is lost — which a dict of counters could not promise
(``d[k] += 1`` is a read and a write another thread can come between), nor swapping a
dict of counters away under a thread that is about to increment it. No address is
parsed there: the event keeps the ``IPAddress`` object the request already holds.

**The flusher.** One background thread per process (``ProcessThread``) drains the deque
every ``DRAIN_SECONDS`` into per-key tallies it alone touches (the client network of an
address is computed there, cached per address), and every ``interval`` seconds writes
the last uses (``keys.touch``) and the tallies (``usage.add``), each one transaction.
A tally the store refused (unavailable) is kept for the next write. On its first round
and then every ``PRUNE_SECONDS``, it prunes usage older than ``retention`` seconds
(every process does: indexed deletes that find nothing cost next to nothing).
Everything is written once more as the process ends (``background.at_exit``: gunicorn
and granian workers alike), so a SIGTERM loses nothing.

**After a write.** ``after_write``, when set (the serving composition root sets anomaly
detection, ``authz.webhooks.anomalies``), is handed each batch the store took, in this
thread: whatever it reads or writes costs the requests nothing. What it raises is
logged and dropped; the batch stays written.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from functools import lru_cache

from authz.background import ProcessThread, at_exit
from authz.request import IPAddress
from authz.store.errors import StoreUnavailable
from authz.store.records import KeyUsage

log = logging.getLogger("authz.store")
DRAIN_SECONDS = 1.0  # the longest events wait in the deque (its memory: this long of requests)
PRUNE_SECONDS = 3600.0
DEFAULT_RETENTION = 90 * 86400.0
HOUR = 3600


@lru_cache(maxsize=65536)
def client_network(address: IPAddress) -> str:
    """The network a client address counts in: its IPv4 /24 or IPv6 /48 (an IPv4-mapped
    IPv6 address as the IPv4 address it carries). Parsing is slow: cached per address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network((address, prefix), strict=False))


class _Tally:
    """One key's requests since the last write (touched by the flushing thread only)."""

    __slots__ = ("after_rotation", "hours", "last", "networks")

    def __init__(self) -> None:
        self.hours: dict[int, list[int]] = {}  # hour start -> [allowed, denied]
        self.networks: dict[str, list[float]] = {}  # network -> [first seen, last seen]
        self.last: tuple[float, bool, IPAddress | None, str | None] = (0.0, False, None, None)
        self.after_rotation = 0

    def add(self, allowed: bool, client_ip: IPAddress | None, route: str | None, deprecated: bool,
            at: float) -> None:
        counts = self.hours.setdefault(int(at // HOUR) * HOUR, [0, 0])
        counts[0 if allowed else 1] += 1
        if client_ip is not None:
            seen = self.networks.get(network := client_network(client_ip))
            if seen is None:
                self.networks[network] = [at, at]
            else:
                seen[0], seen[1] = min(seen[0], at), max(seen[1], at)
        if at >= self.last[0]:
            self.last = (at, allowed, client_ip, route)
        self.after_rotation += deprecated

    def record(self, key_id: str) -> KeyUsage:
        at, allowed, client_ip, route = self.last
        return KeyUsage(key_id, tuple((hour, a, d) for hour, (a, d) in self.hours.items()),
                        tuple((network, first, last) for network, (first, last) in self.networks.items()),
                        at, allowed, None if client_ip is None else str(client_ip), route, self.after_rotation)


class LastUsedRecorder:
    """Implements ``authz.store.interface.LastUseRecorder``: ``write_last_used`` is the
    key table's ``touch``, ``usage`` the usage table (None: usage is not recorded)."""

    def __init__(self, write_last_used: Callable[[dict[str, float]], None], interval: float = 30.0,
                 usage=None, retention: float = DEFAULT_RETENTION) -> None:
        self.write = write_last_used
        self.usage = usage
        self.interval = interval
        self.retention = retention
        self.after_write: Callable[[list[KeyUsage]], None] | None = None
        self._pending: dict[str, float] = {}
        self._events: deque[tuple[str, bool, IPAddress | None, str | None, bool, float]] = deque()
        self._tallies: dict[str, _Tally] = {}
        self._next_write = 0.0  # set by the thread's first round
        self._next_prune = 0.0
        self._lock = threading.Lock()  # one flush at a time (the thread, at exit, a test)
        # The flushing thread does not survive a fork: each worker starts its own.
        self._thread = ProcessThread("authz-last-used", self._tick, min(interval, DRAIN_SECONDS),
                                     prepare=lambda: at_exit(self.flush), after_fork=self._after_fork,
                                     logger=log)

    def _after_fork(self) -> None:
        """In a forked child: a lock the parent's flusher held stays held, and what the
        parent noted is the parent's to write (written twice, counts would double)."""
        self._lock = threading.Lock()
        self._pending, self._events, self._tallies = {}, deque(), {}
        self._next_write = self._next_prune = 0.0

    def record(self, key_id: str) -> None:
        self._pending[key_id] = time.time()
        if not self._thread.started:
            self._thread.ensure_started()

    def count(self, key_id: str, allowed: bool, client_ip: IPAddress | None, route: str | None,
              deprecated: bool) -> None:
        self._events.append((key_id, allowed, client_ip, route, deprecated, time.time()))
        if not self._thread.started:
            self._thread.ensure_started()

    def _tick(self) -> None:
        """The thread's round: drain the events; write once ``interval`` has passed since
        the thread started or last wrote; prune on the first round, then every PRUNE_SECONDS."""
        with self._lock:
            self._drain()
            now = time.monotonic()
            if not self._next_write:
                self._next_write = now + self.interval
            elif now >= self._next_write:
                self._write()
            if self.usage is not None and now >= self._next_prune:
                self._next_prune = now + PRUNE_SECONDS
                self._attempt(self.usage.prune, time.time() - self.retention, "could not prune API key usage")

    def flush(self) -> None:
        with self._lock:
            self._drain()
            self._write()

    def _drain(self) -> None:
        events, tallies = self._events, self._tallies
        while True:
            try:
                key_id, allowed, client_ip, route, deprecated, at = events.popleft()
            except IndexError:
                return
            tally = tallies.get(key_id)
            if tally is None:
                tally = tallies[key_id] = _Tally()
            tally.add(allowed, client_ip, route, deprecated, at)

    def _write(self) -> None:
        self._next_write = time.monotonic() + self.interval
        batch, self._pending = self._pending, {}
        if batch:
            self._attempt(self.write, batch, f"could not record last use of {len(batch)} API key(s)")
        if self.usage is None:
            return
        if self._tallies:
            usage = [tally.record(key_id) for key_id, tally in self._tallies.items()]
            if self._attempt(self.usage.add, usage, f"could not record usage of {len(usage)} API key(s)"):
                self._tallies = {}
                if self.after_write is not None:
                    self._attempt(self.after_write, usage, "could not look for API key anomalies")

    @staticmethod
    def _attempt(write: Callable, argument, failure: str) -> bool:
        """Write; False only when the store is unavailable (what was tallied is kept for
        the next write). Anything else is logged and dropped: the same batch would fail again."""
        try:
            write(argument)
        except StoreUnavailable:
            return False  # the store logs its own fault once per episode
        except Exception:
            log.warning(failure, exc_info=True)
        return True
