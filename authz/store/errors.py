"""The store's errors, apart from any backend so that every layer can catch them."""

from __future__ import annotations

from authz.errors import AuthzError


class StoreError(AuthzError, RuntimeError):
    """The store cannot serve (missing file, wrong schema version, bad input)."""


class StoreUnavailable(StoreError):
    """The store cannot answer right now (file gone, replaced by something invalid,
    truncated, corrupted). Already logged once for the episode: callers deny, quietly."""
