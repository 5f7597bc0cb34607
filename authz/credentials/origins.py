"""Browser origins: what a publishable API key is restricted to, and reading the
``Origin`` a request carries.

An origin is ``scheme://host[:port]`` exactly as browsers serialize it (RFC 6454,
WHATWG URL): ASCII, lower case, no path, no userinfo, no default port, IPv6 in
brackets in its compressed form. Both what operators write and what a request sends
are read by one strict grammar, and anything two parsers could read differently — a
trailing dot, userinfo, a number-like host that is not a plain dotted quad (browsers
read ``127.1`` or ``0x7f.0.0.1`` as an IPv4 address), a written-out default port,
several values, ``null`` — is refused rather than normalised: authz compares origins,
it does not guess what a browser meant.

Allowed origins are exact, or ``https://*.example.com``: the ``*`` stands for exactly
one DNS label (``a.example.com``, not ``example.com`` nor ``a.b.example.com``). Plain
``http`` is accepted only for loopback hosts (local development), as elsewhere in authz.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from typing import NamedTuple

_ORIGIN = re.compile(r"([a-z][a-z0-9+.-]*)://([^/?#@:\[\]]*|\[[^\]/?#@]*\])(?::([0-9]*))?")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_NUMBER_LIKE = re.compile(r"[0-9]+|0x[0-9a-f]*")  # WHATWG: a host "ending in a number" is read as IPv4
DEFAULT_PORTS = {"https": "443", "http": "80"}
LOOPBACK_NAMES = ("localhost",)
MAX_ORIGIN_LENGTH = 300


class OriginError(ValueError):
    """A value that is not one origin authz can compare; the message says why."""


class Origin(NamedTuple):
    scheme: str
    host: str  # lower case; IPv6 with its brackets
    port: str  # "" for the scheme's default

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}" + (f":{self.port}" if self.port else "")


def _check_host(host: str, wildcard: bool) -> None:
    if host.startswith("["):
        try:
            address = ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise OriginError("the IPv6 address in brackets is not valid") from None
        if f"[{address.compressed}]" != host:
            raise OriginError(f"write the IPv6 address as browsers do: [{address.compressed}]")
        return
    if not host:
        raise OriginError("it has no host")
    if host.endswith("."):
        raise OriginError("its host ends with a dot (a second spelling of the same name)")
    if len(host) > 253:
        raise OriginError("its host is longer than 253 characters")
    labels = host.split(".")
    if wildcard:
        labels = labels[1:]
    if any(not _LABEL.fullmatch(label) for label in labels):
        raise OriginError("its host is not a DNS name of letters, digits and inner hyphens "
                          "(internationalised names in their xn-- form)")
    if _NUMBER_LIKE.fullmatch(labels[-1]):
        try:
            address = ipaddress.IPv4Address(host)
        except ValueError:
            raise OriginError("its host looks like a number but is not a dotted-quad IPv4 address") from None
        if wildcard or str(address) != host:
            raise OriginError("its host is not a plain dotted-quad IPv4 address")


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse(value: str, wildcard_allowed: bool = False) -> Origin:
    """One origin, strictly (``OriginError`` says what is wrong). ASCII letters are
    lower-cased, as browsers serialize them; nothing else is rewritten."""
    if not value:
        raise OriginError("it is empty")
    if len(value) > MAX_ORIGIN_LENGTH:
        raise OriginError(f"it is longer than {MAX_ORIGIN_LENGTH} characters")
    if not value.isascii() or not value.isprintable():
        raise OriginError("it is not printable ASCII (internationalised names go in their xn-- form)")
    if value.strip() != value or " " in value or "," in value:
        raise OriginError("it holds several values or spaces")
    if value == "null":
        raise OriginError("'null' is the opaque origin of sandboxed frames, file: pages and redirects: "
                          "it names no site")
    text = value.lower()
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise OriginError("it is not scheme://host[:port]")
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if authority != rest:
        raise OriginError(f"an origin has no path, query or fragment (write {scheme}://{authority})")
    if "@" in authority:
        raise OriginError("it has userinfo (user@): an origin never does")
    match = _ORIGIN.fullmatch(text)
    if match is None:
        raise OriginError("it is not scheme://host[:port]")
    scheme, host, port = match.group(1), match.group(2), match.group(3)
    if scheme not in DEFAULT_PORTS:
        raise OriginError(f"its scheme {scheme!r} is not https (or http for a loopback host)")
    if port is not None:
        if not port or port[0] == "0" or int(port) > 65535:
            raise OriginError("its port is not a number from 1 to 65535 without leading zeros")
        if port == DEFAULT_PORTS[scheme]:
            raise OriginError(f"browsers leave out the default port {port} of {scheme}: write {scheme}://{host}")
    wildcard = host.startswith("*.")
    if "*" in host and not (wildcard and wildcard_allowed and "*" not in host[1:]):
        raise OriginError("a wildcard may only be the whole first label of an allowed origin (https://*.example.com)"
                          if wildcard_allowed else "its host has a '*'")
    _check_host(host, wildcard)
    if wildcard:
        if scheme != "https":
            raise OriginError("a wildcard origin must be https")
        if host.count(".") < 2:
            raise OriginError("a wildcard needs at least two labels after '*.' (https://*.example.com)")
    return Origin(scheme, host, port or "")


def check_allowed(value: str) -> str:
    """An origin an operator allows a key (exact, or with a leading ``*.`` label), in
    the form stored and compared; ``OriginError`` says what is wrong."""
    origin = parse(value, wildcard_allowed=True)
    if origin.scheme == "http" and not _is_loopback(origin.host.removeprefix("*.")):
        raise OriginError("plain http is allowed only for loopback hosts (localhost, 127.0.0.1, [::1]): "
                          "use https")
    return str(origin)


class AllowedOrigins(NamedTuple):
    exact: frozenset[str]
    wildcards: tuple[tuple[str, str, str], ...]  # (scheme, ".suffix", port)

    def __contains__(self, origin: object) -> bool:
        if not isinstance(origin, Origin):
            return False
        if str(origin) in self.exact:
            return True
        for scheme, suffix, port in self.wildcards:
            if origin.scheme == scheme and origin.port == port and origin.host.endswith(suffix):
                label = origin.host[: -len(suffix)]
                if label and "." not in label and not label.startswith("["):
                    return True
        return False


@lru_cache(maxsize=4096)
def allowed(stored: str) -> AllowedOrigins:
    """A key's allowed origins (stored space-separated, as ``check_allowed`` wrote them),
    parsed once per worker."""
    exact, wildcards = set(), []
    for text in stored.split():
        origin = parse(text, wildcard_allowed=True)
        if origin.host.startswith("*."):
            wildcards.append((origin.scheme, origin.host[1:], origin.port))
        else:
            exact.add(str(origin))
    return AllowedOrigins(frozenset(exact), tuple(wildcards))
