"""The SQLite credential store. Only this package writes SQL.

>>> from authz.store import Store
>>> store = Store("authz.db")
>>> store.migrate()                                     # doctest: +SKIP
>>> record, secret = store.keys.create("partner-a", ["orders:read"])   # doctest: +SKIP
"""

from __future__ import annotations

import os

from authz.store.api_keys import ApiKeys, KeyMatch, LastUsedRecorder
from authz.store.certificates import Certificates
from authz.store.database import Database, StoreError, StoreUnavailable
from authz.store.policy_snapshots import PolicySnapshots
from authz.store.principals import Principals, User
from authz.store.revocations import Revocations
from authz.store.signing_keys import SigningKeys

__all__ = ["KeyMatch", "Store", "StoreError", "StoreUnavailable", "User"]


class Store:
    """One credential database: principals and users, API keys, revocations."""

    def __init__(self, path: str | os.PathLike[str], last_used_interval: float = 30.0, serving: bool = False) -> None:
        self.database = Database(path, serving=serving)
        self.principals = Principals(self.database)
        self.keys = ApiKeys(self.database, self.principals)
        self.revocations = Revocations(self.database)
        self.certificates = Certificates(self.database, self.principals, self.revocations)
        self.signing_keys = SigningKeys(self.database)
        self.policy_snapshots = PolicySnapshots(self.database)
        self.last_used = LastUsedRecorder(self.database, last_used_interval)

    @property
    def path(self):
        return self.database.path

    def migrate(self) -> tuple[int, int]:
        return self.database.migrate()

    def check_ready(self) -> None:
        self.database.check_ready()
