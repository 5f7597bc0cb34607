"""The SQLite credential store: the only place authz writes SQL.

Open it through ``authz.store.open_store`` (a path, ``sqlite:///relative``,
``sqlite:////absolute`` or ``:memory:``); everything else types against
``authz.store.interface``.
"""

from __future__ import annotations

import os

from authz.store.last_used import DEFAULT_RETENTION, LastUsedRecorder
from authz.store.sqlite.anomalies import SqliteKeyAnomalies
from authz.store.sqlite.api_keys import SqliteApiKeys
from authz.store.sqlite.certificates import SqliteCertificates
from authz.store.sqlite.changes import SqliteChanges
from authz.store.sqlite.database import Database
from authz.store.sqlite.nonces import SqliteNonces
from authz.store.sqlite.outbox import SqliteOutbox
from authz.store.sqlite.policy_snapshots import SqlitePolicySnapshots
from authz.store.sqlite.principals import SqlitePrincipals
from authz.store.sqlite.revocations import SqliteRevocations
from authz.store.sqlite.signing_keys import SqliteSigningKeys
from authz.store.sqlite.usage import SqliteKeyUsage
from authz.store.tables import insert_into, select_all

__all__ = ["SqliteStore"]


class SqliteStore:
    """One SQLite file: principals and users, API keys and their usage, revocations,
    certificates, signing keys, policy snapshots and the webhook outbox (implements
    ``authz.store.interface.Store``)."""

    def __init__(self, path: str | os.PathLike[str], last_used_interval: float = 30.0, serving: bool = False,
                 usage_retention: float = DEFAULT_RETENTION) -> None:
        self.database = Database(path, serving=serving)
        self.principals = SqlitePrincipals(self.database)
        self.keys = SqliteApiKeys(self.database)
        self.revocations = SqliteRevocations(self.database)
        self.certificates = SqliteCertificates(self.database)
        self.nonces = SqliteNonces(self.database)
        self.signing_keys = SqliteSigningKeys(self.database)
        self.policy_snapshots = SqlitePolicySnapshots(self.database)
        self.changes = SqliteChanges(self.database)
        self.outbox = SqliteOutbox(self.database)
        self.usage = SqliteKeyUsage(self.database)
        self.anomalies = SqliteKeyAnomalies(self.database)
        self.last_used = LastUsedRecorder(self.keys.touch, last_used_interval, self.usage, usage_retention)

    @property
    def path(self):
        return self.database.path

    @property
    def url(self) -> str:
        return str(self.database.path)

    @property
    def location(self) -> str:
        return str(self.database.path)

    def migrate(self) -> tuple[int, int]:
        return self.database.migrate()

    def version(self) -> int:
        return self.database.version()

    def check_ready(self) -> None:
        self.database.check_ready()

    def problem(self) -> str | None:
        return self.database.problem()

    def close(self) -> None:
        self.database.close()

    def dump(self, table: str) -> list[tuple]:
        return [tuple(row) for row in self.database.execute(select_all(table)).fetchall()]

    def load(self, table: str, rows: list[tuple]) -> None:
        with self.database.write() as db:
            db.execute("PRAGMA defer_foreign_keys = ON")  # keys point at keys (rotated_from, replaced_by)
            db.conn.executemany(insert_into(table, "?"), rows)
