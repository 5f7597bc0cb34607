"""Imports run one way through ``authz/`` (README, "Layout"):

    errors, request, decision, config, credentials, observability, store (interface)
      ← authenticators ← policy, admin, webhooks ← engine ← adapters, service, app, cli, serve, wsgi

A module may import its own layer and the layers before it, never a later one: so
``policy/`` (compiled data) can be loaded and tested without the engine or a front
door, and the engine without an adapter. The SQLite backend (``authz.store.sqlite``)
is reached only through ``authz.store`` (``open_store``), so a second backend is a
second package, not a change to its consumers. Every module is parsed with ``ast``
(imports inside functions count too); a module of an unknown package fails the test
until it is given a layer here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "authz"

# Layer of each top-level name under authz (a module or a package).
LAYERS = {
    "": 0, "errors": 0, "request": 0, "decision": 0, "config": 0, "credentials": 0, "observability": 0,
    "background": 0,
    "store": 0,  # its interface may be imported by anyone; its SQLite backend see CONCRETE_STORE
    "authenticators": 1,
    "policy": 2, "admin": 2,  # the store's administrative rules: keys, users, revocations, snapshots
    "webhooks": 2,  # events from the store, delivered with the authenticators' bounded HTTP client
    "engine": 3,
    # Applications of the engine: front doors, the composition root, the CLI, the servers.
    "adapters": 4, "service": 4, "app": 4, "cli": 4, "serve": 4, "wsgi": 4,
}
LAYER_NAMES = {0: "foundation", 1: "authenticators", 2: "policy", 3: "engine", 4: "applications"}
CONCRETE_STORE = "authz.store.sqlite"
CONCRETE_STORES = (CONCRETE_STORE, "authz.store.postgres")

# The commands that only call the library: none of these may be imported there.
# Every command module (base.py holds the group, option parsing and the error wrapper).
THIN_CLI = tuple(sorted(str(p.relative_to(PACKAGE)) for p in (PACKAGE / "cli").glob("*.py")
                        if p.name not in ("__init__.py", "base.py")))
NOT_IN_THIN_CLI = ("sqlite3", "psycopg", "cryptography", "jwt", "hashlib", "hmac", "re", *CONCRETE_STORES)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, relative ones resolved;
    ``from X import y`` counts as importing ``X.y`` too (``y`` may be a submodule)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names if alias.name != "*"]
    return found


def layer_of(module: str) -> int | None:
    """The layer of an ``authz`` module (None: not authz's, or of no known layer)."""
    if module != "authz" and not module.startswith("authz."):
        return None
    return LAYERS.get(module.split(".")[1] if "." in module else "")


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def is_module(name: str) -> bool:
    relative = Path(*name.split(".")[1:]) if "." in name else Path()
    return (PACKAGE / relative).with_suffix(".py").exists() or (PACKAGE / relative / "__init__.py").exists()


def test_every_module_has_a_layer():
    unknown = [module_name(p) for p in modules() if layer_of(module_name(p)) is None]
    assert not unknown, f"give these packages a layer in tests/test_layout.py: {unknown}"


def test_imports_run_one_way():
    offenders = []
    for path in modules():
        source = module_name(path)
        own = layer_of(source)
        for line, target in imported_modules(path):
            if not is_module(target):
                continue  # a name imported from a module, not a submodule
            layer = layer_of(target)
            if layer is not None and own is not None and layer > own:
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {source} ({LAYER_NAMES[own]}) "
                                 f"imports {target} ({LAYER_NAMES[layer]})")
            if any(target == c or target.startswith(c + ".") for c in CONCRETE_STORES) and not (
                    source == "authz.store" or source.startswith("authz.store.")):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {source} imports a store backend "
                                 f"{target}: use the interface and authz.store.open_store")
    assert not offenders, "imports against the direction:\n" + "\n".join(offenders)


@pytest.mark.parametrize("relative", THIN_CLI)
def test_thin_commands_do_no_parsing_crypto_or_sql(relative):
    path = PACKAGE / relative
    offenders = [f"{relative}:{line}: imports {target}" for line, target in imported_modules(path)
                 if any(target == banned or target.startswith(banned + ".") for banned in NOT_IN_THIN_CLI)]
    assert not offenders, "the library's work in a command:\n" + "\n".join(offenders)


def test_the_checker_sees_an_import_against_the_direction(tmp_path, monkeypatch):
    """The test above would pass vacuously if it parsed nothing: it must catch a policy
    module importing the engine, from inside a function too."""
    fake = tmp_path / "authz"
    (fake / "policy").mkdir(parents=True)
    (fake / "engine").mkdir()
    for name in ("__init__.py", "policy/__init__.py", "engine/__init__.py", "engine/decide.py"):
        (fake / name).write_text("")
    (fake / "policy" / "bad.py").write_text("def f():\n    from authz.engine.decide import DecisionEngine\n")
    monkeypatch.setitem(globals(), "PACKAGE", fake)
    with pytest.raises(AssertionError, match=r"policy/bad.py:2: authz.policy.bad \(policy\) imports authz.engine"):
        test_imports_run_one_way()
