"""Which good policy revisions a store keeps (for a worker started while the files are broken)."""

from __future__ import annotations

from authz.store.interface import PolicySnapshots

KEEP = 20  # snapshots kept in all, newest first


def save_snapshot(snapshots: PolicySnapshots, revision: str, directory: str, files: dict[str, bytes]) -> None:
    """Record ``revision`` as the newest good one for ``directory``, keeping the ``KEEP`` newest."""
    snapshots.save(revision, directory, files, KEEP)
