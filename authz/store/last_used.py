"""Last use of API keys, recorded without a write per request (any backend)."""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable

from authz.store.errors import StoreUnavailable

log = logging.getLogger("authz.store")


class LastUsedRecorder:
    """The hot path only notes the time in a dict; a background thread per worker hands
    the batch to ``write`` (the key table's ``touch``) every ``interval`` seconds, and once
    more at exit, so ``authz keys list`` lags by at most that much."""

    def __init__(self, write: Callable[[dict[str, float]], None], interval: float = 30.0) -> None:
        self.write = write
        self.interval = interval
        self._pending: dict[str, float] = {}
        self._lock = threading.Lock()
        self._started = False
        # The flushing thread does not survive a fork: each worker starts its own.
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: (r := ref()) and r._forget_thread())

    def _forget_thread(self) -> None:
        self._started = False
        self._lock = threading.Lock()

    def record(self, key_id: str) -> None:
        self._pending[key_id] = time.time()
        if not self._started:
            self._start()

    def _start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
            thread = threading.Thread(target=self._run, name="authz-last-used", daemon=True)
            thread.start()
            atexit.register(self.flush)

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            self.flush()

    def flush(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, {}
        if not batch:
            return
        try:
            self.write(batch)
        except StoreUnavailable:
            pass  # the store logs its own fault once per episode
        except Exception:
            log.warning("could not record last use of %d API key(s)", len(batch), exc_info=True)
