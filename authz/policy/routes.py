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
from urllib.parse import quote

from authz.policy.requirements import Requirement
from authz.request import BadRequest, CheckRequest, normalise_path


def compile_path(pattern: str) -> str:
    """Regex source for one path glob (raises ValueError for unnormalised globs)."""
    probe = pattern.replace("**", "x").replace("*", "x")
    if "%" in probe:
        raise ValueError(f"path {pattern!r}: write the decoded form (requests are percent-decoded once before "
                         f"matching, so '/a%20b' is written '/a b')")
    try:
        # The glob must be what a request's path decodes to: send it encoded through
        # the same firewall a request meets and expect it back unchanged.
        canonical = normalise_path(quote(probe, safe="/!$&'()*+,=:@~"))
    except BadRequest as exc:
        raise ValueError(f"path {pattern!r} can never match: {exc}") from None
    if canonical != probe:
        raise ValueError(f"path {pattern!r} can never match: requests are matched as {canonical!r}")
    regex = ""
    for segment in pattern.split("/")[1:]:
        if segment == "**":
            regex += "(?:/.*)?"
        elif "**" in segment:
            raise ValueError(f"path {pattern!r}: '**' must be a whole segment")
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


@dataclass
class Route:
    id: str
    file: str
    index: int
    requirement: Requirement
    hosts: HostMatcher | None = None
    paths: re.Pattern[str] | None = None
    methods: frozenset[str] | None = None
    options: dict = field(default_factory=dict)

    def mismatch(self, request: CheckRequest) -> str | None:
        """None when the route matches, else the first criterion that failed."""
        if self.methods is not None and request.method not in self.methods:
            return "method"
        if self.hosts is not None and not self.hosts(request.host):
            return "host"
        if self.paths is not None and not self.paths.fullmatch(request.path):
            return "path"
        return None


class RouteTable:
    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = tuple(routes)

    def match(self, request: CheckRequest) -> Route | None:
        for route in self.routes:
            if route.mismatch(request) is None:
                return route
        return None
