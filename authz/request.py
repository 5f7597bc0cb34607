"""``CheckRequest``: the proxy-neutral description of the request being decided.

Adapters build it; authenticators and the policy read it and nothing else, so no
authenticator ever sees Flask or a proxy's header dialect. Building one normalises
the path: a path that cannot be normalised safely raises ``BadRequest``, which the
engine turns into a ``bad_request`` deny.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import parse_qsl

from authz.errors import AuthzError

MAX_PATH_LENGTH = 8192
MAX_HEADER_VALUE = 16384
MAX_HOST_LENGTH = 300  # a DNS name is at most 253 characters; room for a port or an IPv6 literal

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_HEX = frozenset("0123456789abcdefABCDEF")
# RFC 9110 §5.6.2 token: methods are case-sensitive and compared exactly as sent.
_METHOD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}")
# Headers with which frameworks (Rails, Symfony, Laravel, Express' method-override,
# ASP.NET…) let a POST pretend to be another method; the ``_method`` query parameter
# counts too. (A ``_method`` form field in the body is beyond what a proxy shows authz:
# the upstream must not honour it on protected routes.)
METHOD_OVERRIDE_HEADERS = ("x-http-method-override", "x-http-method", "x-method-override")
_OVERRIDE_KEYS = frozenset(METHOD_OVERRIDE_HEADERS)
_PHP_MANGLING = str.maketrans(". [", "___")
_COMMON_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
# The methods a read-only credential (a publishable API key) may be used for: RFC 9110's
# safe methods as sent (exact case), without TRACE, which echoes the request back.
SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS"))


class BadRequest(AuthzError, ValueError):
    """The request cannot be described safely (unsafe path, oversized value…)."""


class InvalidBody(BadRequest):
    """A JSON description (``POST /v1/decisions``, a policy test case) does not describe a request."""


# The request-target firewall. Each rule refuses something that two HTTP parsers
# (the proxy's, authz's, the upstream's) could read differently. An operator can
# relax a rule by name (AUTHZ_TARGET_ALLOW); docs/contract.md says what the upstream must
# then guarantee. Control characters, invalid UTF-8, malformed escapes and ".." above
# the root cannot be relaxed: no reading of them is safe to match a policy against.
TARGET_RULES = {
    "dot_segments": "'.' or '..' segment (raw or percent-encoded)",
    "empty_segments": "empty path segment ('//')",
    "fragment": "'#' in the request target",
    "encoded_slash": "percent-encoded '/' or '\\' (%2F, %5C)",
    "encoded_percent": "percent-encoded '%' (%25)",
    "semicolon": "';' path parameter",
    "backslash": "'\\' in the path",
}

# Most paths are plain: non-empty segments of unreserved and sub-delim characters (no
# ';'), none of them "." or "..", no escapes, a trailing slash at most. Those match as
# they are, without the walk below.
_SEGMENT = r"[A-Za-z0-9\-._~!$&'()*+,=:@]+"  # unreserved and sub-delims but ';'
CANONICAL_PATH = re.compile(rf"(?:/(?!\.\.?(?:/|$)){_SEGMENT})*/?")
# The same, as a whole origin-form target with a query and no '#': one match instead of
# splitting and normalising.
_PLAIN_TARGET = re.compile(rf"(?=/)((?:/(?!\.\.?(?:/|\?|$)){_SEGMENT})*/?)(?:\?([^#]*))?")


def _refuse(rule: str, allow: frozenset[str]) -> None:
    if rule not in allow:
        raise BadRequest(f"ambiguous request target: {TARGET_RULES[rule]}")


def _decode_segment(segment: str, allow: frozenset[str]) -> str:
    """Percent-decode one raw segment once, as UTF-8; refuse what the rules refuse."""
    if ";" in segment:
        _refuse("semicolon", allow)
    if "\\" in segment:
        _refuse("backslash", allow)
    if "%" not in segment and segment.isascii():
        return segment
    out = bytearray()
    i, n = 0, len(segment)
    while i < n:
        ch = segment[i]
        if ch == "%":
            pair = segment[i + 1 : i + 3]
            if len(pair) != 2 or pair[0] not in _HEX or pair[1] not in _HEX:
                raise BadRequest("malformed percent-escape in path")
            byte = int(pair, 16)
            if byte in (0x2F, 0x5C):
                _refuse("encoded_slash", allow)
                out += b"%" + pair.upper().encode()  # kept encoded: one segment, as the upstream must read it
            elif byte == 0x25:
                _refuse("encoded_percent", allow)
                out.append(byte)
            else:
                out.append(byte)
            i += 3
        else:
            out += ch.encode("utf-8", "surrogatepass")
            i += 1
    try:
        text = out.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("path is not valid UTF-8") from None
    if any(c < " " or "\x7f" <= c <= "\x9f" for c in text):
        raise BadRequest("control character in path")
    return text


def normalise_path(raw: str, allow: frozenset[str] = frozenset()) -> str:
    """The path the policy matches: percent-decoded once as UTF-8, or ``BadRequest``.

    ``raw`` is the path as sent (no query), non-ASCII characters already decoded from
    UTF-8 (adapters do that for WSGI's latin-1 strings). Everything two upstreams could
    read differently is refused (``TARGET_RULES``), unless relaxed in ``allow``: then
    dot segments are resolved, empty segments merged, encoded slashes kept encoded
    inside their segment, and ``;`` / ``\\`` / a decoded ``%`` matched as characters.
    """
    if len(raw) > MAX_PATH_LENGTH:
        raise BadRequest(f"path longer than {MAX_PATH_LENGTH} characters")
    if raw and CANONICAL_PATH.fullmatch(raw):
        return raw
    if not raw.startswith("/"):
        raise BadRequest("path does not start with '/'")
    if any(c <= " " or c == "\x7f" for c in raw):
        raise BadRequest("control character or space in path")
    parts = raw.split("/")
    segments: list[str] = []
    last = len(parts) - 1
    for index in range(1, last + 1):
        segment = _decode_segment(parts[index], allow)
        if segment in (".", ".."):
            _refuse("dot_segments", allow)
            if segment == "..":
                if not segments:
                    raise BadRequest("'..' above the root")
                segments.pop()
            if index == last:
                segments.append("")
        elif segment == "":
            if index != last:
                _refuse("empty_segments", allow)
            else:
                segments.append("")
        else:
            segments.append(segment)
    return "/" + "/".join(segments)


_ABSOLUTE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)(.*)", re.S)


def split_absolute(url: str) -> tuple[str, str, str]:
    """(scheme, host, target) of an absolute http(s) URL, nothing decoded or dropped.

    ``urllib.parse.urlsplit`` would silently cut a fragment (and raise on a broken
    IPv6 literal); here the fragment stays in the target for the firewall to judge.
    """
    found = _ABSOLUTE.fullmatch(url)
    if found is None or found.group(1).lower() not in ("http", "https"):
        raise BadRequest("not an absolute http(s) URL")
    scheme, authority, rest = found.groups()
    if not authority or "@" in authority:
        raise BadRequest("URL without a host, or with user information")
    if not rest:
        rest = "/"
    elif not rest.startswith("/"):
        # "http://api.example.com?/admin/x": nginx's $http_host may end in '?'; no
        # reading of such a URL is safe.
        raise BadRequest("URL whose path does not start with '/'")
    return scheme.lower(), authority, rest


def split_target(target: str, host: str = "", allow: frozenset[str] = frozenset()) -> tuple[str, str, str]:
    """Split a request target into (host, path, query) without decoding anything.

    An absolute-form target (``http://host/path``) must name the host the request is
    for: a proxy routes by one and an upstream may read the other. A ``#`` cannot be
    sent by a conforming client; unless relaxed it is refused, else cut off.
    """
    if "#" in target:
        _refuse("fragment", allow)
        target = target.partition("#")[0]
    if not target.startswith("/") and "://" in target:
        _, named, target = split_absolute(target)
        if host and normalise_host(named) != normalise_host(host):
            raise BadRequest("absolute-form target names another host than Host")
        host = host or named
    path, _, query = target.partition("?")
    return host, path, query


def parse_ip(value: str | None) -> IPAddress | None:
    if not value:
        return None
    value = value.strip()
    if value.startswith("[") and "]" in value:  # "[::1]:1234"
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # "1.2.3.4:1234"
        value = value.split(":", 1)[0]
    return _address(value)


@lru_cache(maxsize=4096)
def _address(text: str) -> IPAddress | None:
    """``ipaddress`` parses in pure Python (several µs an address, on every request for
    X-Real-IP and X-Forwarded-For); the addresses a server sees repeat, and the objects are
    immutable, so the parse is kept. A miss costs what it did."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


@lru_cache(maxsize=4096)
def ip_text(address: IPAddress) -> str:
    """``str(address)``, kept for the same reason as ``_address`` (the decision log writes it)."""
    return str(address)


def in_networks(address: IPAddress | None, networks: Iterable[IPNetwork]) -> bool:
    """Whether ``address`` lies in one of ``networks``; an IPv4-mapped IPv6 address
    (``::ffff:192.0.2.1``, how a dual-stack socket shows an IPv4 peer) counts as the
    IPv4 address it carries. No address is in no network (fail closed)."""
    if address is None:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


class TrustedNetworks:
    """The proxies whose forwarded headers are believed (``AUTHZ_TRUSTED_PROXIES``)."""

    def __init__(self, cidrs: Iterable[str]) -> None:
        self.networks = tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs)
        # Answers per address (the peer and its forwarding hops repeat on every request;
        # comparing against each network is pure Python). Bounded: cleared when full.
        self._known: dict[IPAddress, bool] = {}

    def __contains__(self, address: IPAddress | None) -> bool:
        if address is None:
            return False
        known = self._known.get(address)
        if known is None:
            if len(self._known) >= 4096:
                self._known.clear()
            known = self._known[address] = in_networks(address, self.networks)
        return known

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


@lru_cache(maxsize=1024)
def _header_name(environ_key: str) -> str:
    """``HTTP_X_API_KEY`` -> ``x-api-key``."""
    return environ_key[5:].replace("_", "-").lower()


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
        # A WSGI server's environ holds its process environment too (granian copies
        # os.environ into every request's): pick the headers out in one comprehension, then
        # bound them. Header names map through a small cache (they repeat).
        store: dict[str, str] = {_header_name(key): value for key, value in environ.items()  # type: ignore[misc]
                                 if key[:5] == "HTTP_" and key not in skip}
        for name, value in store.items():
            if len(value) > MAX_HEADER_VALUE:
                raise BadRequest(f"header {name.upper().replace('-', '_')} longer than {MAX_HEADER_VALUE} characters")
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
    # Other (method, path) readings an upstream framework may give this request: the
    # request must be allowed as each of them too (see ``_other_readings``).
    other_readings: tuple[tuple[str, str], ...] = ()
    # The port the door named with the host; None when it named none (the scheme's
    # default). Only a DPoP proof's htu compares it: the policy matches hosts without.
    port: int | None = None
    # Results that must be reached once per request however many readings of it are
    # decided (the readings share this dict): see ``once``.
    memo: dict = field(default_factory=dict, compare=False, repr=False)

    def once(self, key: tuple, check: Callable[[], None], refusal: type[Exception]) -> None:
        """Run ``check`` once for this request, whichever of its readings asks first;
        every asking reading gets its verdict: nothing, or the ``refusal`` it raised, raised
        again. Checks that spend a one-time value (a DPoP proof's jti, a signature's
        nonce) must not run per reading."""
        verdict = self.memo.get(key)
        if verdict is None:
            try:
                check()
                verdict = True
            except refusal as exc:
                verdict = exc
            self.memo[key] = verdict
        if verdict is not True:
            raise verdict

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
        allow: frozenset[str] = frozenset(),
    ) -> CheckRequest:
        """Describe a request from its raw target (``/path?query`` or absolute-form);
        may raise BadRequest. ``allow`` names the firewall rules relaxed (TARGET_RULES)."""
        if method not in _COMMON_METHODS and not _METHOD.fullmatch(method):
            raise BadRequest("malformed method")
        plain = _PLAIN_TARGET.fullmatch(target)
        if plain is not None:  # most requests: nothing to decode, nothing ambiguous
            path, query = plain.group(1), plain.group(2) or ""
        else:
            host, raw_path, query = split_target(target, host, allow)
            path = normalise_path(raw_path, allow)
        headers = headers if isinstance(headers, Headers) else Headers(headers)
        override = None
        if query and ("method" in query or "%" in query):
            override = _query_override(query)
        if not _OVERRIDE_KEYS.isdisjoint(headers):
            override = _header_override(headers, override)
        readings: tuple[tuple[str, str], ...] = ()
        if override or method == "HEAD" or method not in _COMMON_METHODS or (path[-1] == "/" and len(path) > 1):
            readings = _other_readings(method, path, override)
        return cls(method, path, normalise_host(host), scheme.lower() or "http", query, headers, client_ip,
                   client_certs, readings, host_port(host))

    @classmethod
    def from_url(cls, method: str, url: str, headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
                 client_ip: IPAddress | None = None, client_certs: tuple[ForwardedCert, ...] = (),
                 allow: frozenset[str] = frozenset(), host: str | None = None) -> CheckRequest:
        """Describe a request from its absolute URL (``authz policy explain``, nginx's
        ``X-Original-URL``); may raise BadRequest. ``host``, when the caller was also
        told the host apart from the URL (nginx's ``X-Original-Host``), must be the one
        the URL names: a proxy routes by one and an upstream may read the other."""
        scheme, named, target = split_absolute(url)
        if host and normalise_host(named) != normalise_host(host):
            raise BadRequest("the URL names another host than the request's Host")
        return cls.build(method, target, named, scheme, headers, client_ip, client_certs, allow)

    @classmethod
    def from_json(cls, body: object, allow: frozenset[str] = frozenset(),
                  header_certs: Callable[[Headers], tuple[ForwardedCert, ...]] | None = None) -> CheckRequest:
        """Describe a request from its JSON form (``POST /v1/decisions``, a policy test
        case): ``{"method", "url" | "host" + "path", "headers", "client_ip",
        "client_cert"}``; raises ``InvalidBody`` (a BadRequest) when it describes none.

        ``header_certs`` reads client certificates that ``headers`` carry in a proxy's
        dialect (``authz.adapters.client_certs.from_headers``): that knowledge belongs
        to the front doors, so the caller passes it in; ``client_cert`` (a PEM chain,
        leaf first) comes before them.
        """
        if not isinstance(body, dict):
            raise InvalidBody("body must be a JSON object")
        method = body.get("method", "GET")
        raw_headers = body.get("headers", {})
        if not isinstance(method, str) or not isinstance(raw_headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in raw_headers.items()
        ):
            raise InvalidBody("'method' must be a string and 'headers' an object of strings")
        headers = Headers(raw_headers)
        if "url" in body:
            if not isinstance(body["url"], str):
                raise InvalidBody("'url' must be a string")
            try:
                scheme, host, target = split_absolute(body["url"])
            except BadRequest as exc:
                raise InvalidBody(f"'url': {exc}") from None
        elif isinstance(body.get("path"), str):
            scheme, host, target = "http", body.get("host") or headers.get("host", ""), body["path"]
            if not isinstance(host, str):
                raise InvalidBody("'host' must be a string")
        else:
            raise InvalidBody("give 'url', or 'host' and 'path'")
        client_ip = None
        if body.get("client_ip") is not None:
            client_ip = parse_ip(body["client_ip"]) if isinstance(body["client_ip"], str) else None
            if client_ip is None:
                raise InvalidBody("'client_ip' is not an IP address")
        certs = header_certs(headers) if header_certs is not None else ()
        if body.get("client_cert") is not None:
            if not isinstance(body["client_cert"], str):
                raise InvalidBody("'client_cert' must be a PEM string (leaf first, chain after)")
            # Imported here: credentials.x509 builds ForwardedCert, defined in this module.
            from authz.credentials.x509 import from_pem

            certs = (from_pem("api", body["client_cert"]), *certs)
        return cls.build(method, target, host, scheme, headers, client_ip, certs, allow)


def _query_override(query: str) -> str | None:
    """The ``_method`` query parameter (Express' method-override, Laravel, Symfony read
    it), with names decoded and PHP's mangling (``.``, space, ``[`` read as ``_``)."""
    found = None
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name.translate(_PHP_MANGLING) == "_method":
            found = _one_override(found, value)
    return found


def _header_override(headers: Headers, found: str | None) -> str | None:
    for value in headers.values_of(METHOD_OVERRIDE_HEADERS):
        if value is not None:
            found = _one_override(found, value)
    return found


def _one_override(found: str | None, value: str) -> str:
    value = value.strip()
    if not _METHOD.fullmatch(value):
        raise BadRequest("malformed method override")
    if found is not None and found != value:
        # Frameworks disagree on which one wins (PHP takes the last, Express the first).
        raise BadRequest("conflicting method overrides")
    return value


def _other_readings(method: str, path: str, override: str | None) -> tuple[tuple[str, str], ...]:
    """How else upstream frameworks may read this request, each to be allowed too:
    the override method; the method (and override) upper-cased (werkzeug, Django,
    Express upper-case what Go and Caddy pass on as sent); GET for HEAD (frameworks
    answer HEAD with the GET handler); the path without its trailing slash (Rails,
    Express, Spring before 6 route ``/x/`` as ``/x``)."""
    methods = {method} if override is None else {method, override}
    methods |= {m.upper() for m in methods}
    if "HEAD" in methods:
        methods.add("GET")
    paths = {path, path[:-1]} if len(path) > 1 and path.endswith("/") else {path}
    return tuple(sorted((m, p) for m in methods for p in paths if (m, p) != (method, path)))


@lru_cache(maxsize=4096)
def host_port(host: str) -> int | None:
    """The port a Host value names (``api.example.com:8443`` → 8443, ``[::1]:80`` → 80),
    None when it names none. Not validated beyond digits: ``normalise_host`` judges the
    host, and a port no URL can name (0, 70000) simply matches no DPoP proof."""
    host = host.strip()
    if host.startswith("["):
        rest = host[host.find("]") + 1:]
    elif host.count(":") == 1:
        rest = host[host.index(":"):]
    else:
        return None
    digits = rest[1:]
    return int(digits) if rest.startswith(":") and digits.isascii() and digits.isdigit() and len(digits) <= 5 else None


_HOST = re.compile(r"(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::[0-9]{0,5})?")


@lru_cache(maxsize=4096)
def normalise_host(host: str) -> str:
    """Lower-case host without port or trailing dot (``API.example.com:443`` → ``api.example.com``).

    A host that is not a reg-name or an IP literal (spaces, ``@``, ``/``, a broken
    ``[::1``) is refused: a proxy and an upstream could each read something else in it.
    """
    host = host.strip()
    if len(host) > MAX_HOST_LENGTH or not _HOST.fullmatch(host):
        raise BadRequest("malformed host")
    host = host.lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")
