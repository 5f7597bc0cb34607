"""Hot reload: policy files (and the key, CA and CRL files they name) are watched and a
valid change is swapped in whole; a broken one is logged and shown in ``/readyz``
while the last good revision keeps serving.

Each process (gunicorn worker, ``authz grpc``) polls the files' stat twice a second
from a thread of its own, so every worker applies a change within a second;
SIGHUP forces a check. The swap is one attribute assignment (``engine.policy``): a
request that has begun keeps the revision it started with. Good revisions are
snapshotted in the store, and a process started while the files are broken serves
the newest snapshot — never a partial policy.
"""

from __future__ import annotations

import gc
import logging
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from authz.admin.policy_snapshots import save_snapshot
from authz.authenticators import Context
from authz.background import ProcessThread
from authz.observability import metrics
from authz.policy.errors import PolicyError
from authz.policy.loader import CompiledPolicy, load_policy
from authz.store.errors import StoreError
from authz.store.interface import PolicySnapshots

log = logging.getLogger("authz.policy")


# Compiling a large policy must not stall the requests a process serves meanwhile
# (10,000 routes: half a second of pure Python, 180,000 objects). Two things did:
# - the cyclic garbage collector: the allocation burst set off full collections, each
#   holding the GIL for 90-180 ms over the whole heap (the old policy included). It is
#   paused while compiling, and afterwards everything alive is frozen (``gc.freeze``:
#   ignored by later collections), so the new policy is not traversed again and again
#   while it serves. Compiled policies hold no reference cycles (a dropped revision is
#   freed by reference counting), so freezing leaks only what cyclic garbage happens to
#   exist at that moment — bytes, once per revision.
# - the GIL's switch interval: a request needs the GIL several times (the server hands
#   the request over, the app runs, the answer is read back) and waited up to 5 ms
#   each time behind the compiling thread; while compiling it is 0.1 ms.
COMPILE_SWITCH_INTERVAL = 0.0001


@contextmanager
def compiling() -> Iterator[None]:
    """Around a policy load in a serving process (see above)."""
    previous = sys.getswitchinterval()
    collecting = gc.isenabled()
    sys.setswitchinterval(min(previous, COMPILE_SWITCH_INTERVAL))
    gc.disable()
    try:
        yield
    finally:
        sys.setswitchinterval(previous)
        if collecting:
            gc.freeze()
            gc.enable()


def _traceback(exc: Exception) -> bool:
    """A store fault is reported by the store, once per episode: no traceback here."""
    return not isinstance(exc, StoreError)


class PolicyReloader:
    def __init__(self, engine, directory: Path, context: Context, interval: float = 0.5, on_result=None,
                 stamp_before_load: tuple | None = None) -> None:
        self.engine = engine
        self.directory = Path(directory)
        self.context = context
        self.interval = interval
        self.on_result = on_result or (lambda result: None)
        self.error: PolicyError | None = None
        self._stamp: tuple | None = self._fingerprint()
        if stamp_before_load is not None and self._policy_files_part(self._stamp) != stamp_before_load:
            self._stamp = None  # the files changed while the policy loaded: look again at once
        self._lock = threading.Lock()
        # Forced first: what a forked process inherited says nothing about the newest good revision.
        self._watcher = ProcessThread("authz-policy-watch", self.check, interval,
                                      prepare=lambda: self.check(force=True), after_fork=self._new_lock,
                                      error="policy watcher error", logger=log)

    def _new_lock(self) -> None:
        self._lock = threading.Lock()  # a lock inherited through fork may be held by a dead thread

    # -- startup -------------------------------------------------------------------
    @classmethod
    def initial_policy(cls, directory: Path, context: Context,
                       snapshots: PolicySnapshots) -> tuple[CompiledPolicy, PolicyError | None]:
        """The policy to start with: the files, else the last good snapshot, else refuse."""
        try:
            with compiling():
                policy = load_policy(directory, context)
        except PolicyError as exc:
            snapshot = snapshots.latest(str(Path(directory).resolve()))
            if snapshot is None:
                raise
            log.error("policy files are broken; serving the last good revision %s:\n%s", snapshot.revision, exc)
            with compiling():
                return load_policy(_materialise(snapshot.files), context), exc
        save_snapshot(snapshots, policy.revision, str(Path(directory).resolve()), policy.contents)
        return policy, None

    # -- watching ------------------------------------------------------------------
    @staticmethod
    def policy_files_stamp(directory: Path) -> tuple:
        """The stat of the policy files alone: taken before a load, compared after it."""
        return PolicyReloader._stat(sorted(Path(directory).glob("*.json")))

    def _policy_files_part(self, stamp: tuple) -> tuple:
        return tuple(entry for entry in stamp if Path(entry[0]).parent == self.directory
                     and entry[0].endswith(".json"))

    @staticmethod
    def _stat(paths) -> tuple:
        entries = []
        for path in paths:
            try:
                st = path.stat()
                entries.append((str(path), st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                entries.append((str(path), None))
        return tuple(entries)

    def _fingerprint(self) -> tuple:
        paths = sorted(self.directory.glob("*.json"))
        policy = getattr(self.engine, "policy", None)
        if policy is not None:
            paths += [self.directory / name for name in sorted(policy.contents) if "/" in name or
                      not name.endswith(".json")]
        return self._stat(paths)

    def check(self, force: bool = False) -> bool:
        """Reload if anything changed (or when forced); True when a new revision was swapped in."""
        with self._lock:
            stamp = self._fingerprint()
            if stamp == self._stamp and not force:
                return False
            self._stamp = stamp
            try:
                with compiling():
                    policy = load_policy(self.directory, self.context)
            except PolicyError as exc:
                self.error = exc
                swapped = self._serve_newest_snapshot()
                log.error("policy reload failed: the policy files are broken; serving the last good revision "
                          "%s%s:\n%s", self.engine.policy.revision,
                          " (from the store's snapshots)" if swapped else "", exc)
                self.on_result("failure")
                return swapped
            self.error = None
            if policy.revision == self.engine.policy.revision:
                self._snapshot_if_not_newest(policy)
                return False
            old = self._swap(policy)
            self._stamp = self._fingerprint()
            log.info("policy revision %s replaces %s", policy.revision, old)
            self.on_result("success")
            try:
                save_snapshot(self.context.store.policy_snapshots, policy.revision,  # type: ignore[attr-defined]
                              str(self.directory.resolve()), policy.contents)
            except Exception as exc:
                log.warning("could not snapshot policy revision %s: %s", policy.revision, exc,
                            exc_info=_traceback(exc))
            return True

    def _swap(self, policy: CompiledPolicy) -> str:
        """Serve ``policy`` from now on (one assignment: a request keeps the revision it
        began with); the revision it replaces."""
        old = self.engine.policy.revision
        self.engine.policy = policy
        metrics.policy_revision(policy.revision, old)
        return old

    def _snapshot_if_not_newest(self, policy: CompiledPolicy) -> None:
        """Files reverted to the revision this process serves: make it the newest
        snapshot again, or a later break would bring back the revision reverted from."""
        try:
            snapshots = self.context.store.policy_snapshots
            directory = str(self.directory.resolve())
            if snapshots.latest_revision(directory) != policy.revision:
                save_snapshot(snapshots, policy.revision, directory, policy.contents)
        except Exception as exc:
            log.warning("could not snapshot policy revision %s: %s", policy.revision, exc, exc_info=_traceback(exc))

    def _serve_newest_snapshot(self) -> bool:
        """While the files are broken, serve the newest good revision any process proved
        (snapshots in the store) — not whatever this process happened to inherit: a
        worker forked from a master that booted on an older revision must not serve
        it again (that would re-allow what a newer revision denies). Call with the lock held."""
        try:
            snapshots = self.context.store.policy_snapshots
            directory = str(self.directory.resolve())
            if snapshots.latest_revision(directory) in (None, self.engine.policy.revision):
                return False
            snapshot = snapshots.latest(directory)
            if snapshot is None:
                return False
            revision = snapshot.revision
            with compiling():
                policy = load_policy(_materialise(snapshot.files), self.context)
        except Exception as exc:
            log.warning("could not read the newest good policy snapshot; still serving revision %s: %s",
                        self.engine.policy.revision, exc, exc_info=_traceback(exc))
            return False
        old = self._swap(policy)
        log.warning("policy revision %s (the newest good one, from the store) replaces %s", revision, old)
        return True

    def ensure_running(self) -> None:
        """Start this process's watcher thread (after a fork, the parent's is gone),
        catching up first with any change made while no watcher ran here."""
        self._watcher.ensure_started()

    def status(self) -> dict:
        policy = self.engine.policy
        body: dict = {"status": "ready", "revision": policy.revision, "files": policy.files}
        if self.error is not None:
            body["status"] = "degraded"
            body["detail"] = f"the policy files are broken; serving the last good revision {policy.revision}"
            body["errors"] = [p.to_json() for p in self.error.problems]
        return body


def _materialise(contents: dict[str, bytes]) -> Path:
    directory = Path(tempfile.mkdtemp(prefix="authz-policy-snapshot-"))
    for name, data in contents.items():
        target = (directory / name).resolve()
        if directory.resolve() not in target.parents:
            continue  # a snapshot never writes outside its directory
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return directory
