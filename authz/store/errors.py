"""The store's errors, apart from any backend so that every layer can catch them."""

from __future__ import annotations

from authz.errors import AuthzError


class StoreError(AuthzError, RuntimeError):
    """The store cannot serve (missing file, wrong schema version, bad input)."""


class StoreUnavailable(StoreError):
    """The store cannot answer right now (file gone, replaced by something invalid,
    truncated, corrupted). Already logged once for the episode: callers deny, quietly."""


class StoreUnreachable(StoreUnavailable):
    """A store on another machine does not answer (a PostgreSQL server down), or a
    replica has not confirmed it is current for longer than AUTHZ_MAX_STALENESS: an
    upstream's failure, denied 500 ``upstream_unavailable``."""
