"""Route matching: hosts, path globs and methods, first match in file order.

Path globs are matched against the request path as the firewall in ``request.py``
left it — percent-decoded once, as UTF-8, with every ambiguous form refused: ``*`` is one segment
(or part of one: ``*.png``), ``**`` any number of segments including none, so
``/admin/**`` covers ``/admin``, ``/admin/`` and everything below.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import quote

from authz.policy.requirements import Requirement
from authz.request import CANONICAL_PATH, BadRequest, CheckRequest, normalise_path


@lru_cache(maxsize=65536)
def check_path(pattern: str) -> None:
    """Raise ValueError for a glob no request path could ever be (requests are matched
    after the firewall: decoded once, no empty or dot segments)."""
    probe = pattern.replace("**", "x").replace("*", "x")
    if "%" in probe:
        raise ValueError(f"path {pattern!r}: write the decoded form (requests are percent-decoded once before "
                         f"matching, so '/a%20b' is written '/a b')")
    for segment in pattern.split("/")[1:]:
        if "**" in segment and segment != "**":
            raise ValueError(f"path {pattern!r}: '**' must be a whole segment")
    if probe.isascii() and CANONICAL_PATH.fullmatch(probe):
        return  # most globs: plain segments the firewall returns unchanged (the slow check agrees)
    try:
        # The glob must be what a request's path decodes to: send it encoded through
        # the same firewall a request meets and expect it back unchanged.
        canonical = normalise_path(quote(probe, safe="/!$&'()*+,=:@~"))
    except BadRequest as exc:
        raise ValueError(f"path {pattern!r} can never match: {exc}") from None
    if canonical != probe:
        raise ValueError(f"path {pattern!r} can never match: requests are matched as {canonical!r}")



def compile_path(pattern: str) -> str:
    """Regex source for one path glob (raises ValueError for a glob that can never match)."""
    check_path(pattern)
    regex = ""
    for segment in pattern.split("/")[1:]:
        if segment == "**":
            regex += "(?:/.*)?"
        elif segment == "*":
            regex += "/[^/]+"
        else:
            regex += "/" + "[^/]*".join(re.escape(part) for part in segment.split("*"))
    return regex or "/"


@dataclass
class HostMatcher:
    exact: frozenset[str]
    suffixes: tuple[str, ...]

    @classmethod
    def compile(cls, hosts: Sequence[str]) -> HostMatcher:
        exact = frozenset(h.lower() for h in hosts if not h.startswith("*."))
        suffixes = tuple(h[1:].lower() for h in hosts if h.startswith("*."))
        return cls(exact, suffixes)

    def __call__(self, host: str) -> bool:
        if host in self.exact:
            return True
        return any(host.endswith(s) and len(host) > len(s) for s in self.suffixes)


class PathMatcher:
    """A route's path globs, matched without a regular expression where none is needed:
    literal paths by set membership, ``/prefix/**`` by a prefix test, and only the rest
    through one regex (compiling 10,000 regexes is most of what loading a large policy
    would cost)."""

    __slots__ = ("exact", "regex", "subtrees")

    def __init__(self, globs: Sequence[str]) -> None:
        exact, subtrees, others = set(), [], []
        for glob in globs:
            head = glob[:-3] if glob.endswith("/**") else None
            if "*" not in glob:
                exact.add(glob)
            elif head is not None and "*" not in head:
                subtrees.append(head)  # "" for "/**": every path
            else:
                others.append(compile_path(glob))
        self.exact = frozenset(exact)
        self.subtrees = tuple(subtrees)
        self.regex = re.compile("|".join(f"(?:{source})" for source in others)) if others else None

    def fullmatch(self, path: str) -> bool:
        if path in self.exact:
            return True
        for head in self.subtrees:
            if path.startswith(head) and (len(path) == len(head) or path[len(head)] == "/"):
                return True
        return self.regex is not None and self.regex.fullmatch(path) is not None


def literal_prefix(pattern: str) -> tuple[str, ...]:
    """The segments of a glob before its first wildcard: every path it matches starts
    with them (``/v1/orders/*/items`` → ``("v1", "orders")``)."""
    prefix = []
    for segment in pattern.split("/")[1:]:
        if "*" in segment:
            break
        prefix.append(segment)
    return tuple(prefix)


@dataclass
class Route:
    id: str
    file: str
    index: int
    requirement: Requirement
    hosts: HostMatcher | None = None
    paths: PathMatcher | None = None
    methods: frozenset[str] | None = None
    options: dict = field(default_factory=dict)
    # Literal path prefixes of the route's globs (``((),)``: any path): the index's keys.
    prefixes: tuple[tuple[str, ...], ...] = ((),)

    def mismatch(self, request: CheckRequest) -> str | None:
        """None when the route matches, else the first criterion that failed."""
        if self.methods is not None and request.method not in self.methods:
            return "method"
        if self.hosts is not None and not self.hosts(request.host):
            return "host"
        if self.paths is not None and not self.paths.fullmatch(request.path):
            return "path"
        return None


class _Node:
    __slots__ = ("children", "here")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.here: list[int] = []  # positions of routes whose literal prefix ends here, ascending


class _PrefixTree:
    """Routes by the literal path segments their globs start with."""

    def __init__(self) -> None:
        self.root = _Node()

    def add(self, prefix: tuple[str, ...], position: int) -> None:
        node = self.root
        for segment in prefix:
            child = node.children.get(segment)
            if child is None:
                child = node.children[segment] = _Node()
            node = child
        if not node.here or node.here[-1] != position:
            node.here.append(position)

    def collect(self, segments: list[str], found: list[list[int]]) -> None:
        node = self.root
        if node.here:
            found.append(node.here)
        for segment in segments:
            node = node.children.get(segment)  # type: ignore[assignment]
            if node is None:
                return
            if node.here:
                found.append(node.here)


class RouteTable:
    """First match in order (files by name, then position), found through an index.

    Only routes that can match are tried: those for the request's host (exact, by
    ``*.`` suffix, or any host) whose globs' literal prefix starts the request's path.
    They are tried in their policy order and each is checked whole (``Route.mismatch``),
    so the answer is exactly the linear scan's. Small tables are scanned linearly:
    walking the index costs more than trying a handful of routes.
    """

    LINEAR_UP_TO = 16

    def __init__(self, routes: Sequence[Route], linear_up_to: int | None = None) -> None:
        self.routes = tuple(routes)
        self.linear = len(self.routes) <= (self.LINEAR_UP_TO if linear_up_to is None else linear_up_to)
        self._any = _PrefixTree()
        self._exact: dict[str, _PrefixTree] = {}
        self._suffix: dict[str, _PrefixTree] = {}
        for position, route in enumerate(self.routes):
            if route.hosts is None:
                trees = [self._any]
            else:
                trees = [self._exact.setdefault(h, _PrefixTree()) for h in route.hosts.exact]
                trees += [self._suffix.setdefault(s, _PrefixTree()) for s in route.hosts.suffixes]
            for tree in trees:
                for prefix in route.prefixes:
                    tree.add(prefix, position)

    def candidates(self, host: str | None, path: str) -> list[int]:
        """Positions of the routes that may match, ascending. ``host=None``: only the
        routes for any host."""
        found: list[list[int]] = []
        segments = path.split("/")[1:]
        self._any.collect(segments, found)
        if host is not None:
            tree = self._exact.get(host)
            if tree is not None:
                tree.collect(segments, found)
            if self._suffix:
                dot = host.find(".", 1)
                while dot > 0:
                    tree = self._suffix.get(host[dot:])
                    if tree is not None:
                        tree.collect(segments, found)
                    dot = host.find(".", dot + 1)
        if len(found) == 1:
            return found[0]
        return sorted({position for positions in found for position in positions})

    def match(self, request: CheckRequest) -> Route | None:
        if self.linear:
            for route in self.routes:
                if route.mismatch(request) is None:
                    return route
            return None
        routes = self.routes
        for position in self.candidates(request.host, request.path):
            route = routes[position]
            if route.mismatch(request) is None:
                return route
        return None
