"""The one interface every authenticator implements.

An authenticator is built once per policy revision from its JSON config and then
asked, per request, for an ``Outcome``: absent, invalid or valid with an identity.
It reads only the ``CheckRequest`` and the services in ``Context`` — never Flask.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, NamedTuple

from authz.authenticators.cache import TTLCache
from authz.authenticators.password_guard import PasswordGuard
from authz.decision import Outcome
from authz.errors import AuthzError
from authz.request import CheckRequest
from authz.store.interface import CredentialReads


class ConfigError(AuthzError, ValueError):
    """A semantically wrong authenticator option; ``field`` is the option's name."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass
class Context:
    """What authenticators may use besides the request."""

    store: CredentialReads
    base_dir: Path = Path(".")
    max_chain_length: int = 16  # AUTHZ_MAX_CHAIN_LENGTH: certificates in a client chain, leaf and root included
    caches: dict[str, TTLCache] = field(default_factory=dict)
    password_guard: PasswordGuard = field(default_factory=PasswordGuard)

    def cache(self, name: str, max_entries: int = 10_000) -> TTLCache:
        """A per-worker cache shared by every revision, so a reload keeps it warm."""
        if name not in self.caches:
            self.caches[name] = TTLCache(name, max_entries)
        return self.caches[name]


class Slot(NamedTuple):
    """A place a credential arrives in: ``name`` as ``Outcome.slot`` reports it and, for
    a header, its ``header`` spelling (None for the query string or a certificate)."""

    name: str
    header: str | None = None


AUTHORIZATION = Slot("authorization", "Authorization")
X_API_KEY = Slot("x-api-key", "X-API-Key")
QUERY = Slot("query")
COOKIE = Slot("cookie")  # a token in a cookie: no header a proxy could strip (it carries other cookies)
CLIENT_CERT = Slot("client_cert")


class Lint(NamedTuple):
    """A warning about a config that loads but is probably a mistake; ``option`` is the
    option it is about (None: the authenticator as a whole)."""

    option: str | None
    message: str


class Authenticator(ABC):
    """One authenticator type. Besides ``authenticate``, a type declares what the rest
    of authz needs to know about it without knowing the type: the options that name
    files, the credential slots it reads, and its lints."""

    type: ClassVar[str]
    # Options naming a file (or a list of files) relative to the policy directory: read
    # with the policy, snapshotted with its revision, watched for changes.
    file_options: ClassVar[tuple[str, ...]] = ()
    # Where this type reads credentials: a filled header slot no authenticator of the
    # route claimed turns "no credentials" into "credentials not accepted here".
    slots: ClassVar[tuple[Slot, ...]] = ()

    def __init__(self, name: str, config: dict, context: Context) -> None:
        self.name = name
        self.config = config
        self.context = context

    @classmethod
    def files(cls, config: dict) -> list[str]:
        """The files ``config`` names in this type's ``file_options`` (relative paths)."""
        names: list[str] = []
        for option in cls.file_options:
            value = config.get(option)
            if isinstance(value, str):
                names.append(value)
            elif isinstance(value, list):
                names += [item for item in value if isinstance(item, str)]
        return names

    @classmethod
    def lint(cls, config: dict) -> list[Lint]:
        """What in a valid ``config`` is probably a mistake (``authz policy check`` warnings)."""
        return []

    @abstractmethod
    def authenticate(self, request: CheckRequest) -> Outcome:
        """Decide absent / invalid / valid for this request; never raise for bad input."""

    def challenge(self, outcome: Outcome | None = None) -> str | None:
        """The ``WWW-Authenticate`` value to send with a 401, or None for none."""
        return None

    def insufficient_scope_challenge(self, scopes: frozenset[str]) -> str | None:
        """The ``WWW-Authenticate`` value for a 403 on missing scopes (bearer schemes only)."""
        return None


def quote(value: str) -> str:
    """An RFC 9110 quoted-string."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
