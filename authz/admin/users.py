"""Users for Basic auth, and the enabling and disabling of any principal."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from authz.admin.checks import check_name, check_tokens
from authz.credentials import passwords
from authz.store.errors import StoreError
from authz.store.interface import Store
from authz.store.records import Principal


@dataclass(frozen=True, slots=True)
class HtpasswdImport:
    """Who was imported, and each refused line with why."""

    imported: tuple[str, ...]
    refused: tuple[dict, ...]

    def to_json(self) -> dict:
        return {"imported": list(self.imported), "refused": list(self.refused)}


def describe_refused(refused: Iterable[dict]) -> str:
    return "; ".join(f"line {r['line']} ({r['user']}): {r['why']}" for r in refused)


class UserAdmin:
    def __init__(self, store: Store) -> None:
        self.store = store

    def add(self, name: str, password: str, scopes: Iterable[str] = (), roles: Iterable[str] = ()) -> None:
        """Add a user with an Argon2id hash of ``password``."""
        scopes, roles = self._checked(name, scopes, roles)
        self.store.principals.add_user(name, passwords.hash_password(password), scopes, roles)

    def require(self, name: str) -> None:
        """``StoreError`` unless there is a user ``name`` (before asking for a password)."""
        if self.store.principals.find_user(name) is None:
            raise StoreError(f"no user named {name!r}")

    def passwd(self, name: str, password: str) -> None:
        """Change a user's password (effective on the next request)."""
        self.require(name)
        self.store.principals.set_password(name, passwords.hash_password(password))

    def set_disabled(self, name: str, disabled: bool) -> None:
        """Disable (or enable) a principal: its password, keys and certificates with it."""
        if not self.store.principals.set_disabled(name, disabled):
            raise StoreError(f"no principal named {name!r}")

    def list(self) -> list[Principal]:
        return self.store.principals.list()

    def import_htpasswd(self, text: str, scopes: Iterable[str] = (), roles: Iterable[str] = (),
                        skip_unsupported: bool = False) -> HtpasswdImport:
        """Import the users of an htpasswd file (bcrypt or Argon2id hashes, kept as they
        are). Any refused line refuses the whole file unless ``skip_unsupported``."""
        scopes, roles = tuple(scopes), tuple(roles)
        accepted, refused = [], []
        for line in passwords.read_htpasswd(text):
            why = line.refused
            if why is None and self.store.principals.find_user(line.user) is not None:  # type: ignore[arg-type]
                why = "a user of that name exists already"
            if why is None:
                accepted.append(line)
            else:
                refused.append({"line": line.number, "user": line.user, "why": why})
        if refused and not skip_unsupported:
            raise StoreError(f"nothing imported: {len(refused)} line(s) refused — {describe_refused(refused)} "
                             "(fix them or pass --skip-unsupported)")
        for line in accepted:
            checked_scopes, checked_roles = self._checked(line.user, scopes, roles)  # type: ignore[arg-type]
            self.store.principals.add_user(line.user, line.password_hash, checked_scopes, checked_roles)  # type: ignore[arg-type]
        return HtpasswdImport(tuple(line.user for line in accepted), tuple(refused))  # type: ignore[misc]

    @staticmethod
    def _checked(name: str, scopes: Iterable[str], roles: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        check_name(name)
        return check_tokens(scopes, "scope"), check_tokens(roles, "role")
