"""What operators may write into a store: principal names, scope and role tokens, CIDRs, origins."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from authz.credentials import origins
from authz.store.errors import StoreError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:/+=~-]{0,199}")
_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,128}")  # RFC 6749 scope-token


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise StoreError(
            f"invalid principal name {name!r}: use letters, digits and ._@:/+=~- "
            "(at most 200 characters, starting with a letter or digit)"
        )
    return name


def check_tokens(values: Iterable[str], what: str) -> tuple[str, ...]:
    """Scopes or roles, validated and without repeats (first occurrence kept)."""
    values = tuple(values)
    for value in values:
        if not _TOKEN.fullmatch(value):
            raise StoreError(f"invalid {what} {value!r}: printable ASCII, no spaces, quotes or \\")
    return tuple(dict.fromkeys(values))


def parse_cidrs(values: Iterable[str]) -> tuple[str, ...]:
    """CIDRs validated and normalised (``203.0.113.7/24`` → ``203.0.113.0/24``)."""
    out = []
    for value in values:
        try:
            out.append(str(ipaddress.ip_network(value.strip(), strict=False)))
        except ValueError:
            raise StoreError(f"invalid CIDR {value!r} (e.g. 203.0.113.0/24 or 2001:db8::/32)") from None
    return tuple(out)


def parse_origins(values: Iterable[str]) -> tuple[str, ...]:
    """Browser origins a publishable key may be used from, validated strictly and
    without repeats (``https://app.example.com``, ``https://*.example.com``)."""
    out = []
    for value in values:
        try:
            out.append(origins.check_allowed(value))
        except origins.OriginError as exc:
            raise StoreError(f"invalid origin {value!r}: {exc}") from None
    return tuple(dict.fromkeys(out))
