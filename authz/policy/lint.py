"""``authz policy check`` warnings: things that load fine but are probably mistakes."""

from __future__ import annotations

from authz.authenticators import TYPES
from authz.policy.errors import PolicyProblem, pointer
from authz.policy.loader import CompiledPolicy, PolicySource
from authz.policy.routes import Route
from authz.policy.writing import unsafe_methods


def _sample_paths(globs: list[str]) -> list[str]:
    """Concrete paths a glob list matches, to test whether an earlier route swallows them."""
    samples = []
    for glob in globs:
        samples += [glob.replace("**", "zz/yy").replace("*", "xx"), glob.replace("/**", "").replace("*", "xx") or "/"]
    return samples


def _covers(earlier: Route, later: Route, later_spec: dict) -> bool:
    if earlier.methods is not None and (later.methods is None or not later.methods <= earlier.methods):
        return False
    if earlier.hosts is not None:
        hosts = later_spec.get("match", {}).get("hosts")
        if hosts is None or not all(earlier.hosts(h.replace("*.", "zz.")) for h in hosts):
            return False
    if earlier.paths is not None:
        paths = later_spec.get("match", {}).get("paths")
        if paths is None or not all(earlier.paths.fullmatch(p) for p in _sample_paths(paths)):
            return False
    return True


def _anonymous_only(route: Route) -> bool:
    leaves = route.requirement.leaves()
    return all(leaf.authenticator.type == "anonymous" for leaf in leaves)


def warnings(source: PolicySource, policy: CompiledPolicy) -> list[PolicyProblem]:
    found: list[PolicyProblem] = []
    specs = {(file, i): spec for file, doc in source.documents for i, spec in enumerate(doc.get("routes", []))}
    routes = policy.routes.routes
    for n, later in enumerate(routes):
        spec = specs[(later.file, later.index)]
        # A route that covers this one matches its first sample request: only the
        # index's candidates for that request need the full comparison.
        hosts = spec.get("match", {}).get("hosts")
        host = hosts[0].lower().replace("*.", "zz.") if hosts else None
        path = _sample_paths(spec["match"]["paths"])[0] if "paths" in spec.get("match", {}) else "/"
        for position in policy.routes.candidates(host, path):
            if position >= n:
                break
            earlier = routes[position]
            if _covers(earlier, later, spec):
                found.append(PolicyProblem(later.file, pointer(["routes", later.index]),
                                           f"route {later.id!r} can never match: route {earlier.id!r} "
                                           f"({earlier.file}) comes first and matches all it does", "warning"))
                break
    used = {leaf.authenticator.name for route in routes for leaf in route.requirement.leaves()}
    for file, doc in source.documents:
        for name, config in doc.get("authenticators", {}).items():
            where = pointer(["authenticators", name])
            if name not in used:
                found.append(PolicyProblem(file, where, f"authenticator {name!r} is never used by a route", "warning"))
            for lint in TYPES[config["type"]].lint(config):
                found.append(PolicyProblem(file, pointer(["authenticators", name, lint.option]) if lint.option
                                           else where, lint.message, "warning"))
    protected_hosts: dict[str, str] = {}
    for route in routes:
        if not _anonymous_only(route):
            for host in specs[(route.file, route.index)].get("match", {}).get("hosts", ["*"]):
                protected_hosts.setdefault(host, route.id)
    for route in routes:
        if _anonymous_only(route):
            for host in specs[(route.file, route.index)].get("match", {}).get("hosts", ["*"]):
                other = protected_hosts.get(host) or protected_hosts.get("*")
                if other:
                    found.append(PolicyProblem(route.file, pointer(["routes", route.index]),
                                               f"anonymous route {route.id!r} on host {host}, where route "
                                               f"{other!r} requires authentication: check it exposes only "
                                               "what is public", "warning"))
                    break
    for route in routes:
        methods = unsafe_methods(route)
        publishable = sorted({leaf.authenticator.name for leaf in route.requirement.leaves()
                              if leaf.authenticator.type == "api_key" and leaf.authenticator.config.get("publishable")})
        if methods is not None and publishable:
            found.append(PolicyProblem(route.file, pointer(["routes", route.index]),
                                       f"route {route.id!r} admits {methods}, where publishable keys "
                                       f"({', '.join(publishable)}) are refused: they are read-only (GET, HEAD, "
                                       "OPTIONS); if the route only reads, list its methods", "warning"))
    for route in routes:
        if route.options.get("preflight") and route.methods is not None and route.methods <= {"OPTIONS"}:
            found.append(PolicyProblem(route.file, pointer(["routes", route.index, "preflight"]),
                                       f"route {route.id!r} matches OPTIONS only: a preflight is decided by the route "
                                       "of the request it announces (Access-Control-Request-Method), so put "
                                       "\"preflight\" on the routes of the methods the browser will send", "warning"))
    return found

