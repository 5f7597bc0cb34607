"""The route index finds exactly the route the linear first-match scan finds."""

import random
import re

import pytest

from authz.policy.routes import HostMatcher, PathMatcher, Route, RouteTable, compile_path, literal_prefix
from authz.request import CheckRequest


def route(n: int, paths=None, hosts=None, methods=None) -> Route:
    return Route(id=f"r{n}", file="policy.json", index=n, requirement=None,  # type: ignore[arg-type]
                 hosts=HostMatcher.compile(hosts) if hosts else None, paths=PathMatcher(paths) if paths else None,
                 methods=frozenset(methods) if methods else None,
                 prefixes=tuple(dict.fromkeys(literal_prefix(p) for p in paths)) if paths else ((),))


TABLE = [
    route(0, ["/health"], methods=["GET"]),
    route(1, ["/v1/orders/*:approve"], hosts=["api.example.com"], methods=["POST"]),
    route(2, ["/v1/orders", "/v1/orders/**"], hosts=["api.example.com"], methods=["GET"]),
    route(3, ["/v1/orders/**"], hosts=["*.example.com"]),
    route(4, ["/v1/**"], hosts=["api.example.com", "docs.example.com"]),
    route(5, ["/files/*.png"]),
    route(6, ["/a/**/z"]),
    route(7, ["/a/b/"]),
    route(8, None, hosts=["*.internal.example.com"]),
    route(9, ["/**"], methods=["OPTIONS"]),
]


@pytest.mark.parametrize(("method", "host", "path", "expected"), [
    ("GET", "api.example.com", "/health", "r0"),
    ("HEAD", "api.example.com", "/health", None),
    ("POST", "api.example.com", "/v1/orders/42:approve", "r1"),
    ("POST", "api.example.com", "/v1/orders/42", "r3"),            # not approve, not GET: the wildcard host
    ("GET", "api.example.com", "/v1/orders", "r2"),
    ("GET", "api.example.com", "/v1/orders/42/items", "r2"),
    ("GET", "eu.example.com", "/v1/orders/42", "r3"),
    ("GET", "example.com", "/v1/orders/42", None),                  # *.example.com needs a label before
    ("DELETE", "docs.example.com", "/v1/users", "r4"),
    ("GET", "docs.example.com", "/v2/users", None),
    ("GET", "h", "/files/cat.png", "r5"),
    ("GET", "h", "/files/x/cat.png", None),
    ("GET", "h", "/a/z", "r6"),
    ("GET", "h", "/a/b/c/z", "r6"),
    ("GET", "h", "/a/b/", "r7"),
    ("GET", "h", "/a/b", None),
    ("PUT", "db.internal.example.com", "/anything", "r8"),
    ("OPTIONS", "h", "/x/y", "r9"),
    ("OPTIONS", "api.example.com", "/v1/orders", "r3"),
])
@pytest.mark.parametrize("linear_up_to", [0, 1000])
def test_overlapping_routes_first_match(method, host, path, expected, linear_up_to):
    table = RouteTable(TABLE, linear_up_to=linear_up_to)
    found = table.match(CheckRequest.build(method, path, host))
    assert (found.id if found else None) == expected


SEGMENTS = ["v1", "v2", "orders", "users", "a", "b", "x.png", "café"]
HOSTS = ["api.example.com", "docs.example.com", "a.b.example.com", "*.example.com", "*.b.example.com", "other.test"]


def random_glob(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(0, 4)):
        roll = rng.random()
        parts.append("**" if roll < 0.12 else "*" if roll < 0.25 else "*.png" if roll < 0.3 else rng.choice(SEGMENTS))
    glob = "/" + "/".join(parts)
    if "**" in glob.replace("/**", ""):
        glob = glob.replace("**", "*")
    return glob + ("/" if rng.random() < 0.1 and not glob.endswith("/") else "")


def random_path(rng: random.Random) -> str:
    return "/" + "/".join(rng.choice([*SEGMENTS, "42", "zz"]) for _ in range(rng.randint(0, 5)))


@pytest.mark.parametrize("seed", range(20))
def test_index_agrees_with_the_linear_scan(seed):
    rng = random.Random(seed)
    routes = []
    for n in range(rng.randint(1, 300)):
        routes.append(route(
            n,
            paths=[random_glob(rng) for _ in range(rng.randint(1, 3))] if rng.random() < 0.9 else None,
            hosts=rng.sample(HOSTS, rng.randint(1, 2)) if rng.random() < 0.6 else None,
            methods=rng.sample(["GET", "POST", "DELETE"], rng.randint(1, 2)) if rng.random() < 0.5 else None))
    indexed, linear = RouteTable(routes, linear_up_to=0), RouteTable(routes, linear_up_to=10**9)
    assert not indexed.linear and linear.linear
    matched = 0
    for _ in range(400):
        host = rng.choice([h.replace("*.", "q.") for h in HOSTS] + ["example.com", "b.example.com"])
        request = CheckRequest.build(rng.choice(["GET", "POST", "DELETE", "PUT"]), random_path(rng), host)
        expected = linear.match(request)
        assert indexed.match(request) is expected, (request.method, request.host, request.path)
        matched += expected is not None
    assert matched > 0  # the generated policies do match something


@pytest.mark.parametrize("seed", range(5))
def test_path_matcher_agrees_with_the_glob_regex(seed):
    """Literal globs by set, /prefix/** by prefix, the rest by regex: the same answers as
    one regex compiled from every glob."""
    rng = random.Random(seed)
    for _ in range(200):
        globs = [random_glob(rng) for _ in range(rng.randint(1, 3))]
        matcher = PathMatcher(globs)
        regex = re.compile("|".join(f"(?:{compile_path(g)})" for g in globs))
        for _ in range(30):
            path = random_path(rng) + rng.choice(["", "/"])
            path = path.replace("//", "/")
            assert matcher.fullmatch(path) is (regex.fullmatch(path) is not None), (globs, path)
