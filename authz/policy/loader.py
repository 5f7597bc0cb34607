"""Reading, validating and compiling a policy directory into a servable revision.

Every problem found is reported, not only the first, each with its file and JSON
pointer. A policy either compiles whole or not at all: callers keep serving the
previous revision (or refuse to start) on ``PolicyError``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from authz.authenticators import TYPES, Authenticator, ConfigError, Context
from authz.policy import schema
from authz.policy.errors import PolicyError, PolicyProblem, did_you_mean, pointer
from authz.policy.requirements import AllOf, AnyOf, Leaf, Requirement
from authz.policy.routes import HostMatcher, PathMatcher, Route, RouteTable, check_path, literal_prefix

MAX_POLICY_FILE = 4 * 1024 * 1024


@dataclass
class PolicySource:
    directory: Path
    documents: list[tuple[str, dict]]
    revision: str
    contents: dict[str, bytes] = field(default_factory=dict)  # relative path -> bytes, policy files


@dataclass
class CompiledPolicy:
    revision: str
    directory: Path
    routes: RouteTable
    authenticators: dict[str, Authenticator]
    files: list[str]
    # Everything the revision was built from (policy files and the key, CA and CRL
    # files they name), relative to the directory: what a snapshot must restore.
    contents: dict[str, bytes] = field(default_factory=dict)


def read_policy_dir(directory: str | Path) -> PolicySource:
    """Read and schema-check every ``*.json`` directly in ``directory``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise PolicyError([PolicyProblem(str(directory), "", "policy directory not found")])
    paths = sorted(p for p in directory.glob("*.json") if not p.is_dir())
    if not paths:
        raise PolicyError([PolicyProblem(str(directory), "", "no *.json policy files in this directory")])
    problems: list[PolicyProblem] = []
    documents: list[tuple[str, dict]] = []
    contents: dict[str, bytes] = {}
    digest = hashlib.sha256()
    for path in paths:
        name = str(path)
        try:
            if path.stat().st_size > MAX_POLICY_FILE:
                problems.append(PolicyProblem(name, "", f"larger than {MAX_POLICY_FILE} bytes"))
                continue
            raw = path.read_bytes()
        except OSError as exc:
            problems.append(PolicyProblem(name, "", f"cannot read: {exc.strerror or exc}"))
            continue
        digest.update(path.name.encode() + b"\0" + raw + b"\0")
        contents[path.name] = raw
        try:
            document = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            problems.append(PolicyProblem(name, "", "not UTF-8 text"))
            continue
        except json.JSONDecodeError as exc:
            problems.append(PolicyProblem(name, "", f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"))
            continue
        found = schema.validate(name, document)
        problems.extend(found)
        if not found:
            documents.append((name, document))
    if problems:
        raise PolicyError(problems)
    return PolicySource(directory, documents, digest.hexdigest()[:12], contents)


def compile_policy(source: PolicySource, context: Context) -> CompiledPolicy:
    """Build authenticators, requirement trees and the route table; check references."""
    problems: list[PolicyProblem] = []
    context.base_dir = source.directory  # key and CA paths are relative to the policy files
    authenticators: dict[str, Authenticator] = {}
    defined_in: dict[str, str] = {}
    for file, document in source.documents:
        for name, config in document.get("authenticators", {}).items():
            where = pointer(["authenticators", name])
            if name in defined_in:
                problems.append(PolicyProblem(
                    file, where, f"authenticator {name!r} is already defined in {defined_in[name]}"))
                continue
            defined_in[name] = file
            try:
                authenticators[name] = TYPES[config["type"]](name, config, context)
            except ConfigError as exc:
                problems.append(PolicyProblem(file, pointer(["authenticators", name, exc.field]), exc.message))

    routes: list[Route] = []
    route_in: dict[str, str] = {}
    for file, document in source.documents:
        for index, spec in enumerate(document.get("routes", [])):
            base = ["routes", index]
            if spec["id"] in route_in:
                problems.append(PolicyProblem(
                    file, pointer([*base, "id"]), f"route id {spec['id']!r} is already used in {route_in[spec['id']]}"))
                continue
            route_in[spec["id"]] = file
            requirement = _requirement(spec["require"], [*base, "require"], file, authenticators, defined_in, problems)
            match = spec.get("match", {})
            paths = None
            if "paths" in match:
                valid = []
                for i, glob in enumerate(match["paths"]):
                    try:
                        check_path(glob)
                        valid.append(glob)
                    except ValueError as exc:
                        problems.append(PolicyProblem(file, pointer([*base, "match", "paths", i]), str(exc)))
                paths = PathMatcher(valid) if valid else None
            if requirement is None:
                continue
            routes.append(Route(
                id=spec["id"], file=file, index=index, requirement=requirement,
                hosts=HostMatcher.compile(match["hosts"]) if "hosts" in match else None,
                paths=paths,
                methods=frozenset(match["methods"]) if "methods" in match else None,
                options={k: v for k, v in spec.items() if k not in ("id", "match", "require")},
                prefixes=tuple(dict.fromkeys(literal_prefix(g) for g in match["paths"])) if "paths" in match else ((),),
            ))
    if not route_in and not problems:
        problems.append(PolicyProblem(
            str(source.directory), "", "no routes defined: every request would be denied with no_route"))
    if problems:
        raise PolicyError(problems)
    contents = dict(source.contents)
    for file, document in source.documents:
        for name, config in document.get("authenticators", {}).items():
            for relative in TYPES[config["type"]].files(config):
                try:
                    contents[relative] = (source.directory / relative).read_bytes()
                except OSError as exc:  # read a moment ago by the authenticator: raced with an edit
                    raise PolicyError([PolicyProblem(file, pointer(["authenticators", name]),
                                                     f"cannot read {relative}: {exc.strerror}")]) from None
    digest = hashlib.sha256()
    for relative in sorted(contents):
        digest.update(relative.encode() + b"\0" + contents[relative] + b"\0")
    return CompiledPolicy(
        revision=digest.hexdigest()[:12], directory=source.directory, routes=RouteTable(routes),
        authenticators=authenticators, files=[file for file, _ in source.documents], contents=contents,
    )


def load_policy(directory: str | Path, context: Context) -> CompiledPolicy:
    return compile_policy(read_policy_dir(directory), context)


def _requirement(spec, path, file, authenticators, defined_in, problems) -> Requirement | None:
    where = pointer(path)
    if isinstance(spec, str):
        spec = {"use": spec}
        leaf_path = path
    else:
        leaf_path = [*path, "use"]
    if "any" in spec or "all" in spec:
        key = "any" if "any" in spec else "all"
        children = [
            _requirement(child, [*path, key, i], file, authenticators, defined_in, problems)
            for i, child in enumerate(spec[key])
        ]
        if any(child is None for child in children):
            return None
        for i, child in enumerate(children):
            if isinstance(child, Leaf) and child.bind_certificate:
                siblings = [c for c in children if isinstance(c, Leaf) and c.authenticator.type == "mtls"]
                if key != "all" or child.authenticator.type != "jwt" or not siblings:
                    problems.append(PolicyProblem(file, pointer([*path, key, i, "bind_certificate"]),
                                                  "bind_certificate goes on a jwt leaf inside an 'all' that also "
                                                  "has an mtls leaf"))
                    return None
        return (AnyOf if key == "any" else AllOf)(children, where)
    name = spec["use"]
    if name not in defined_in:
        problems.append(PolicyProblem(
            file, pointer(leaf_path),
            f"unknown authenticator {name!r}{did_you_mean(name, defined_in)}",
        ))
        return None
    if name not in authenticators:  # defined, but its config was wrong (reported already)
        return None
    if spec.get("bind_certificate") and path[-1] == "require":
        problems.append(PolicyProblem(file, pointer([*path, "bind_certificate"]),
                                      "bind_certificate goes on a jwt leaf inside an 'all' that also has an mtls leaf"))
        return None
    if spec.get("dpop") and authenticators[name].type not in ("jwt", "oauth2_introspection"):
        problems.append(PolicyProblem(file, pointer([*path, "dpop"]),
                                      "dpop goes on a jwt or oauth2_introspection leaf"))
        return None
    if spec.get("dpop") and getattr(authenticators[name], "cookie", None) is not None:
        # RFC 9449 binds the token to Authorization: DPoP; a cookie token is never DPoP-bound.
        problems.append(PolicyProblem(file, pointer([*path, "dpop"]),
                                      f"dpop goes on a leaf whose authenticator reads no cookie ({name} has a cookie "
                                      "in token_from): a DPoP-bound token travels in Authorization: DPoP"))
        return None
    if spec.get("dpop_nonce") and not spec.get("dpop"):
        problems.append(PolicyProblem(file, pointer([*path, "dpop_nonce"]),
                                      "dpop_nonce goes on a leaf that takes DPoP (\"dpop\": \"required\" or "
                                      "\"allowed\")"))
        return None
    return Leaf(
        authenticator=authenticators[name], pointer=where, bind_certificate=bool(spec.get("bind_certificate")),
        dpop=spec.get("dpop"), dpop_nonce=spec.get("dpop_nonce"),
        scopes=frozenset(spec.get("scopes", ())), roles=frozenset(spec.get("roles", ())),
        principals=tuple(spec.get("principals", ())),
    )
