"""The credential store behind an interface.

``open_store(url)`` is the one way in; everything else types against the Protocols of
``authz.store.interface`` and catches ``StoreError`` / ``StoreUnavailable``. Importing
this package imports no backend: ``policy/`` may use the interface and the errors
without a concrete store.

>>> from authz.store import open_store
>>> store = open_store("authz.db")                     # doctest: +SKIP
>>> store.migrate()                                     # doctest: +SKIP
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

from authz.store.errors import StoreError, StoreUnavailable, StoreUnreachable
from authz.store.interface import CredentialReads, ServingStore, Store

__all__ = ["CredentialReads", "ServingStore", "Store", "StoreError", "StoreUnavailable", "StoreUnreachable",
           "open_store", "redact", "serving_store", "sqlite_path"]


def redact(url: str | os.PathLike[str]) -> str:
    """The URL as messages show it: without its password."""
    url = os.fspath(url)
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def sqlite_path(url: str | os.PathLike[str]) -> str | None:
    """The SQLite file a store URL names (a plain path, ``sqlite:///relative``,
    ``sqlite:////absolute``, ``:memory:``), or None when it names another scheme."""
    text = os.fspath(url)
    if text == ":memory:" or "://" not in text:
        return text
    scheme, _, rest = text.partition("://")
    if scheme.lower() != "sqlite":
        return None
    if not rest.startswith("/") or len(rest) == 1:
        raise StoreError(f"{text}: expected sqlite:///relative/path or sqlite:////absolute/path")
    return rest[1:]


def open_store(url: str | os.PathLike[str], *, last_used_interval: float = 30.0, serving: bool = False,
               usage_retention: float | None = None) -> Store:
    """The store a URL names. ``serving`` is for long-running servers (they log store
    faults once per episode and never delete a WAL on close); the CLI leaves it off.
    ``usage_retention``: seconds API key usage is kept (what its writer prunes past;
    default 90 days)."""
    extra = {} if usage_retention is None else {"usage_retention": usage_retention}
    path = sqlite_path(url)
    if path is None:
        scheme = urlsplit(os.fspath(url)).scheme or os.fspath(url).partition("://")[0]
        if scheme.lower() in ("postgresql", "postgres"):
            from authz.store.postgres import PostgresStore

            return PostgresStore(os.fspath(url), last_used_interval=last_used_interval, serving=serving, **extra)
        raise StoreError(f"unsupported store URL scheme {scheme!r}: use a path, sqlite:///path or postgresql://…")
    from authz.store.sqlite import SqliteStore

    return SqliteStore(path, last_used_interval=last_used_interval, serving=serving, **extra)


def serving_store(store: Store, max_staleness: float) -> ServingStore:
    """What a serving process reads: ``store`` itself when it is a local file, else a
    ``Replica`` of it (credential state in memory, following the change log, denying
    past ``max_staleness`` seconds without confirming it is current)."""
    listener = getattr(store, "listener", None)
    if listener is None:
        return store
    from authz.store.replica import Replica

    return Replica(store, max_staleness, listener)
