"""Last use of API keys, recorded without a write per request (any backend)."""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable

from authz.background import ProcessThread
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
        # The flushing thread does not survive a fork: each worker starts its own.
        self._thread = ProcessThread("authz-last-used", self.flush, interval,
                                     prepare=lambda: atexit.register(self.flush), after_fork=self._new_lock,
                                     logger=log)

    def _new_lock(self) -> None:
        self._lock = threading.Lock()  # a lock the parent's flusher held stays held in the child

    def record(self, key_id: str) -> None:
        self._pending[key_id] = time.time()
        if not self._thread.started:
            self._thread.ensure_started()

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
