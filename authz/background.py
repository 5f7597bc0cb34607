"""Background threads that survive ``fork``: one per process, started on first use.

A gunicorn worker is forked from a master that may already have started a thread; the
child inherits the flag that says "started" but not the thread. ``ProcessThread``
forgets its thread in the child (``os.register_at_fork``), so the first call of
``ensure_started`` in each process starts a fresh one — exactly one, even when many
requests race to it.

What such a thread batches must also be written when the process ends, and ``atexit``
alone does not see every end: a gunicorn worker leaves by ``sys.exit`` (atexit runs),
but a granian worker is a ``multiprocessing`` child, which ends with ``os._exit`` after
running multiprocessing's own finalizers only — atexit handlers never run there, so a
SIGTERM lost whatever was batched. ``at_exit`` registers with both.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from collections.abc import Callable
from multiprocessing import util as multiprocessing_util

log = logging.getLogger("authz.background")


class ProcessThread:
    """A named daemon thread running ``work`` every ``interval`` seconds, at most one per
    process.

    ``prepare`` runs in the caller of the ``ensure_started`` that starts the thread,
    before it starts (catch up on what happened while no thread ran here, reopen what
    must not be shared with the parent). ``after_fork`` runs in a forked child, to
    replace locks an inherited thread may have held. An exception from ``work`` is
    logged with ``error`` (on ``logger``) and the loop goes on.
    """

    def __init__(self, name: str, work: Callable[[], None], interval: float, *,
                 prepare: Callable[[], None] | None = None, after_fork: Callable[[], None] | None = None,
                 error: str | None = None, logger: logging.Logger = log) -> None:
        self.name = name
        self.work = work
        self.interval = interval
        self.prepare = prepare
        self.after_fork = after_fork
        self.error = error or f"{name}: background work failed"
        self.log = logger
        self.started = False  # in this process
        self._lock = threading.Lock()
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: (thread := ref()) and thread._forget())

    def _forget(self) -> None:
        """In a forked child: the parent's thread is not here, and a lock it held stays held."""
        self.started = False
        self._lock = threading.Lock()
        if self.after_fork is not None:
            self.after_fork()

    def ensure_started(self) -> bool:
        """Start this process's thread unless it runs already; True when this call started it."""
        if self.started:
            return False
        with self._lock:
            if self.started:
                return False
            self.started = True
        if self.prepare is not None:
            self.prepare()
        start(self.name, self._loop)
        return True

    def _loop(self) -> None:
        stop = threading.Event()
        while not stop.wait(self.interval):
            try:
                self.work()
            except Exception:
                self.log.exception(self.error)


def start(name: str, target: Callable[[], None]) -> threading.Thread:
    """Run ``target`` once in a named daemon thread (the name cut to what ``ps`` shows well)."""
    thread = threading.Thread(target=target, name=name[:60], daemon=True)
    thread.start()
    return thread


def at_exit(func: Callable[[], None]) -> None:
    """Run ``func`` once when this process ends without being killed: at interpreter
    exit (gunicorn workers, the CLI) or as a ``multiprocessing`` child ends (granian
    workers, which skip atexit). Call it from the process it is for (a ``prepare``):
    multiprocessing ignores a finalizer registered by a parent."""
    done = False

    def once() -> None:
        nonlocal done
        if not done:
            done = True
            func()

    atexit.register(once)
    multiprocessing_util.Finalize(None, once, exitpriority=10)
