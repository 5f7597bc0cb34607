"""Admin operations on a credential store: the library the ``authz`` CLI is a skin over
(as sqlite-utils' CLI is over its library). The rules live here, the same for every
backend: what a valid name, scope or CIDR is, how keys are generated and rotated, how
long revocations and policy snapshots are kept. The store only reads and writes.

>>> from authz.admin import Admin
>>> from authz.store import open_store
>>> admin = Admin(open_store("authz.db"))                                  # doctest: +SKIP
>>> record, secret = admin.keys.create("partner-a", ["orders:read"])       # doctest: +SKIP
"""

from __future__ import annotations

from authz.admin.anomalies import AnomalyAdmin
from authz.admin.keys import KeyAdmin
from authz.admin.revocations import CertificateAdmin, InvalidToken, TokenAdmin
from authz.admin.signing_keys import SigningKeyAdmin
from authz.admin.usage import UsageAdmin
from authz.admin.users import HtpasswdImport, UserAdmin
from authz.store.interface import Store

__all__ = ["Admin", "HtpasswdImport", "InvalidToken"]


class Admin:
    """One store's admin operations, grouped as the CLI's command groups are."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.keys = KeyAdmin(store)
        self.users = UserAdmin(store)
        self.tokens = TokenAdmin(store)
        self.certificates = CertificateAdmin(store)
        self.signing_keys = SigningKeyAdmin(store)
        self.usage = UsageAdmin(store)
        self.anomalies = AnomalyAdmin(store)

    def init(self, keep_retired_for: float) -> tuple[int, int]:
        """Create or migrate the store, and give it a signing key if it has none;
        returns (old schema version, new)."""
        versions = self.store.migrate()
        self.signing_keys.ensure(keep_retired_for)
        return versions
