"""The PostgreSQL credential store: one database for many replicas.

Open it through ``authz.store.open_store("postgresql://user:password@host/db")``;
everything else types against ``authz.store.interface``. Serving processes wrap it in
``authz.store.replica.Replica`` (state in memory, kept current by the change log).
"""

from __future__ import annotations

from authz.store.last_used import DEFAULT_RETENTION, LastUsedRecorder
from authz.store.postgres.anomalies import PostgresKeyAnomalies
from authz.store.postgres.api_keys import PostgresApiKeys
from authz.store.postgres.certificates import PostgresCertificates
from authz.store.postgres.changes import PostgresChanges
from authz.store.postgres.database import CHANNEL, Database, Listener
from authz.store.postgres.nonces import PostgresNonces
from authz.store.postgres.outbox import PostgresOutbox
from authz.store.postgres.policy_snapshots import PostgresPolicySnapshots
from authz.store.postgres.principals import PostgresPrincipals
from authz.store.postgres.revocations import PostgresRevocations
from authz.store.postgres.signing_keys import PostgresSigningKeys
from authz.store.postgres.usage import PostgresKeyUsage
from authz.store.tables import insert_into, select_all

__all__ = ["CHANNEL", "PostgresStore"]


class PostgresStore:
    """One PostgreSQL database (implements ``authz.store.interface.Store``)."""

    def __init__(self, url: str, last_used_interval: float = 30.0, serving: bool = False,
                 usage_retention: float = DEFAULT_RETENTION) -> None:
        self.database = Database(url, serving=serving)
        self.principals = PostgresPrincipals(self.database)
        self.keys = PostgresApiKeys(self.database)
        self.revocations = PostgresRevocations(self.database)
        self.certificates = PostgresCertificates(self.database)
        self.nonces = PostgresNonces(self.database)
        self.signing_keys = PostgresSigningKeys(self.database)
        self.policy_snapshots = PostgresPolicySnapshots(self.database)
        self.changes = PostgresChanges(self.database)
        self.outbox = PostgresOutbox(self.database)
        self.usage = PostgresKeyUsage(self.database)
        self.anomalies = PostgresKeyAnomalies(self.database)
        self.last_used = LastUsedRecorder(self.keys.touch, last_used_interval, self.usage, usage_retention)

    @property
    def url(self) -> str:
        """The URL it was opened with, password included: what reopens it (``open_store``)."""
        return self.database.url

    @property
    def location(self) -> str:
        return self.database.location

    def migrate(self) -> tuple[int, int]:
        return self.database.migrate()

    def version(self) -> int:
        return self.database.version()

    def check_ready(self) -> None:
        self.database.check_ready()

    def problem(self) -> str | None:
        return self.database.problem()

    def dump(self, table: str) -> list[tuple]:
        return [tuple(row) for row in self.database.query(select_all(table))]

    def load(self, table: str, rows: list[tuple]) -> None:
        with self.database.write(changes=False) as tx, tx.conn.cursor() as cursor:
            cursor.executemany(insert_into(table, "%s"), rows)
            if table == "principals":  # ids were copied: new principals continue after them
                cursor.execute("SELECT setval(pg_get_serial_sequence('principals', 'id'), "
                               "GREATEST(COALESCE(MAX(id), 0), 1)) FROM principals")

    def close(self) -> None:
        self.database.close()

    def listener(self) -> Listener:
        """A connection listening for change-log announcements (a replica's wake-up)."""
        return Listener(self.database.connect())
