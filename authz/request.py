"""``CheckRequest``: the proxy-neutral description of the request being decided.

Adapters build it; authenticators and the policy read it and nothing else, so no
authenticator ever sees Flask or a proxy's header dialect. Building one normalises
the path: a path that cannot be normalised safely raises ``BadRequest``, which the
engine turns into a ``bad_request`` deny.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

MAX_PATH_LENGTH = 8192
MAX_HEADER_VALUE = 16384

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PCT = re.compile(r"%(..)")
_HEX = frozenset("0123456789abcdefABCDEF")
_METHOD = re.compile(r"[A-Z][A-Z0-9!#$%&'*+.^_`|~-]{0,31}")


class BadRequest(ValueError):
    """The request cannot be described safely (unsafe path, oversized value…)."""


# Most paths are already canonical: non-empty segments of plain characters, none of
# them "." or "..", no escapes. Those are returned as they are without the walk below.
_CANONICAL = re.compile(r"(?:/(?!\.\.?(?:/|$))[A-Za-z0-9\-._~!$&'()*+,;=:@]+)*/?")


def normalise_path(raw: str) -> str:
    """Return the canonical form of a request path, or raise ``BadRequest``.

    Percent-encoded unreserved characters are decoded (so ``/%61dmin`` is
    ``/admin``), other escapes are kept with upper-case hex, dot segments are
    resolved and repeated slashes collapsed. Refused because a backend may read them
    differently from the policy: an encoded ``/`` or ``\\``, NUL and other control
    characters, a raw backslash, malformed escapes, and ``..`` above the root.
    """
    if len(raw) > MAX_PATH_LENGTH:
        raise BadRequest(f"path longer than {MAX_PATH_LENGTH} characters")
    if raw and _CANONICAL.fullmatch(raw):
        return raw
    if not raw.startswith("/"):
        raise BadRequest("path does not start with '/'")
    out: list[str] = []
    i, n = 0, len(raw)
    while i < n:
        ch = raw[i]
        if ch == "%":
            pair = raw[i + 1 : i + 3]
            if len(pair) != 2 or pair[0] not in _HEX or pair[1] not in _HEX:
                raise BadRequest("malformed percent-escape in path")
            byte = int(pair, 16)
            if byte in (0x2F, 0x5C):
                raise BadRequest("encoded '/' or '\\' in path")
            if byte < 0x20 or byte == 0x7F:
                raise BadRequest("encoded control character in path")
            out.append(chr(byte) if byte in _UNRESERVED else "%" + pair.upper())
            i += 3
            continue
        code = ord(ch)
        if code < 0x21 or code == 0x7F or ch == "\\":
            raise BadRequest("control character, space or backslash in path")
        # Non-ASCII (e.g. raw UTF-8 passed on by nginx, seen here as latin-1) is
        # re-escaped so that the policy compares one spelling only.
        out.append(ch if code < 0x80 else "".join(f"%{b:02X}" for b in ch.encode("latin-1", "replace")))
        i += 1
    segments: list[str] = []
    parts = "".join(out).split("/")
    for index, segment in enumerate(parts[1:], start=1):
        last = index == len(parts) - 1
        if segment == "..":
            if not segments:
                raise BadRequest("'..' above the root")
            segments.pop()
            if last:
                segments.append("")
        elif segment == "." or segment == "":
            if last:
                segments.append("")
        else:
            segments.append(segment)
    return "/" + "/".join(segments)


def split_target(target: str) -> tuple[str, str]:
    """Split a request target into (path, query) without decoding anything."""
    path, _, query = target.partition("?")
    path = path.partition("#")[0]
    return path, query


def parse_ip(value: str | None) -> IPAddress | None:
    if not value:
        return None
    value = value.strip()
    if value.startswith("[") and "]" in value:  # "[::1]:1234"
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # "1.2.3.4:1234"
        value = value.split(":", 1)[0]
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


class TrustedNetworks:
    """The proxies whose forwarded headers are believed (``AUTHZ_TRUSTED_PROXIES``)."""

    def __init__(self, cidrs: Iterable[str]) -> None:
        self.networks = tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs)

    def __contains__(self, address: IPAddress | None) -> bool:
        if address is None:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    def client_ip(
        self, peer: IPAddress, forwarded_for: str | None, real_ip: str | None
    ) -> IPAddress | None:
        """Find the client by walking the forwarding chain right to left.

        Hops inside the trusted networks are skipped; the first untrusted address is
        the client. An unparsable hop stops the walk with no answer (``None``), so
        an IP allowlist fails closed instead of trusting a forged value.
        """
        hops = [h.strip() for h in forwarded_for.split(",")] if forwarded_for else []
        hops = [h for h in hops if h]
        if real_ip and (not hops or hops[-1] != real_ip.strip()):
            hops.append(real_ip.strip())
        if not hops:
            return peer
        client: IPAddress | None = None
        for hop in reversed(hops):
            address = parse_ip(hop)
            if address is None:
                return None
            client = address
            if address not in self:
                return address
        return client


class Headers(Mapping[str, str]):
    """Case-insensitive, read-only header mapping (keys stored lower-case)."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        store: dict[str, str] = {}
        for key, value in pairs:
            if len(value) > MAX_HEADER_VALUE:
                raise BadRequest(f"header {key} longer than {MAX_HEADER_VALUE} characters")
            lower = key.lower()
            store[lower] = f"{store[lower]}, {value}" if lower in store else value
        self._items = store

    @classmethod
    def from_environ(cls, environ: Mapping[str, object], skip: frozenset[str] = frozenset()) -> Headers:
        """The request headers of a WSGI environ (``HTTP_*``), minus those in ``skip``."""
        store: dict[str, str] = {}
        for key, value in environ.items():
            if key.startswith("HTTP_") and key not in skip:
                if len(value) > MAX_HEADER_VALUE:  # type: ignore[arg-type]
                    raise BadRequest(f"header {key[5:]} longer than {MAX_HEADER_VALUE} characters")
                store[key[5:].replace("_", "-").lower()] = value  # type: ignore[assignment]
        headers = cls.__new__(cls)
        headers._items = store
        return headers

    def values_of(self, lower_names: tuple[str, ...]) -> tuple[str | None, ...]:
        """The values of several headers named in lower case (None where absent), at C speed."""
        return tuple(map(self._items.get, lower_names))

    def __getitem__(self, key: str) -> str:
        return self._items[key.lower()]

    def get(self, key: str, default=None):  # type: ignore[override]
        return self._items.get(key.lower(), default)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._items

    def __iter__(self):
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


# Where a client certificate can come from: proxy header dialects (adapters/client_certs.py),
# the JSON API's client_cert, and Envoy gRPC's source.certificate.
CERT_SOURCES = ("nginx", "xfcc", "traefik", "rfc9440", "api", "envoy_grpc")


@dataclass(frozen=True, slots=True)
class ForwardedCert:
    """A client certificate as one proxy header described it (see adapters/client_certs.py).

    ``chain`` is DER, leaf first; it is empty when the proxy sent only a fingerprint
    (XFCC ``Hash``). ``proxy_verify`` is the proxy's own verdict where it gives one
    (nginx ``SUCCESS`` / ``FAILED:…`` / ``NONE``). ``error`` says why a header that was
    present could not be read — the authenticator then refuses, never ignores it.
    """

    source: str
    chain: tuple[bytes, ...] = ()
    sha256: str | None = None
    proxy_verify: str | None = None
    error: str | None = None
    chain_digest: bytes = b""  # SHA-256 over the whole chain: a cache key for its verification


@dataclass(slots=True)
class CheckRequest:
    """The original request as the proxy described it, already normalised."""

    method: str
    path: str
    host: str = ""
    scheme: str = "http"
    query: str = ""
    headers: Headers = field(default_factory=Headers)
    client_ip: IPAddress | None = None
    client_certs: tuple[ForwardedCert, ...] = ()

    @property
    def client_cert_chain(self) -> tuple[bytes, ...]:
        """The first forwarded chain (DER, leaf first), or ()."""
        return next((c.chain for c in self.client_certs if c.chain), ())

    @classmethod
    def build(
        cls,
        method: str,
        target: str,
        host: str = "",
        scheme: str = "http",
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        client_ip: IPAddress | None = None,
        client_certs: tuple[ForwardedCert, ...] = (),
    ) -> CheckRequest:
        """Describe a request from its raw target (``/path?query``); may raise BadRequest."""
        method = method.strip().upper()
        if not _METHOD.fullmatch(method):
            raise BadRequest("malformed method")
        raw_path, query = split_target(target)
        return cls(
            method=method,
            path=normalise_path(raw_path),
            host=normalise_host(host),
            scheme=scheme.lower() or "http",
            query=query,
            headers=headers if isinstance(headers, Headers) else Headers(headers),
            client_ip=client_ip,
            client_certs=client_certs,
        )


def normalise_host(host: str) -> str:
    """Lower-case host without port or trailing dot (``API.example.com:443`` → ``api.example.com``)."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")
