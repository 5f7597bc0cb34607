"""``authz policy``: check, explain, test and start policies."""

from __future__ import annotations

import json
from pathlib import Path

import click

from authz.authenticators import Context
from authz.cli.base import command, emit, main, store
from authz.config import Settings, default_from_env
from authz.policy import PolicyError
from authz.store import open_store
from authz.store.overlay import StandInStore


@main.group()
def policy() -> None:
    """Policy files."""


@command(policy, "check")
@click.argument("directory", required=False, default=default_from_env("AUTHZ_POLICY_DIR"),
                type=click.Path(path_type=Path))
@click.option("--strict", is_flag=True, help="Exit 2 when there are warnings.")
def policy_check(directory, strict) -> None:
    """Validate a policy directory: errors (exit 1) and warnings (exit 2 with --strict)."""
    from authz.policy import compile_policy, read_policy_dir
    from authz.policy.lint import warnings

    ctx = click.get_current_context()
    try:
        source = read_policy_dir(directory)
        compiled = compile_policy(source, Context(store=open_store(":memory:")))
    except PolicyError as exc:
        if ctx.obj.get("json"):
            click.echo(json.dumps({"ok": False, "problems": [p.to_json() for p in exc.problems]}, indent=2))
        else:
            for problem in exc.problems:
                click.echo(f"error: {problem}", err=True)
        ctx.exit(1)
    found = warnings(source, compiled)
    emit(ctx, {"ok": True, "revision": compiled.revision, "files": compiled.files,
               "routes": [r.id for r in compiled.routes.routes], "warnings": [w.to_json() for w in found]},
         "\n".join([f"warning: {w}" for w in found]
                   + [f"{directory}: OK, revision {compiled.revision}, {len(compiled.routes.routes)} route(s)"
                      + (f", {len(found)} warning(s)" if found else "")]))
    if found and strict:
        ctx.exit(2)


@command(policy, "explain")
@click.argument("method")
@click.argument("url")
@click.option("-H", "--header", "headers", multiple=True, help="'Name: value' (repeatable).")
@click.option("--cert", "cert_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Client certificate chain (PEM, leaf first).")
@click.option("--as-key", "as_key", help="Dry run: present this API key id as if its secret were given.")
@click.option("--as-user", "as_user", help="Dry run: present this user as if the right password were given.")
@click.option("--policy-dir", default=default_from_env("AUTHZ_POLICY_DIR"), type=click.Path(path_type=Path))
def policy_explain(method, url, headers, cert_file, as_key, as_user, policy_dir) -> None:
    """Why a request would be allowed or denied: routes, requirement tree, decision."""
    from authz.credentials.x509 import from_pem
    from authz.engine import DecisionEngine
    from authz.engine.explain import explain, render_text
    from authz.policy import load_policy
    from authz.request import BadRequest, CheckRequest

    s = StandInStore(store())
    header_pairs = []
    for header in headers:
        name, colon, value = header.partition(":")
        if not colon or not name.strip():
            raise click.BadParameter(f"{header!r} is not 'Name: value'", param_hint="'-H'")
        header_pairs.append((name.strip(), value.strip()))
    if as_key:
        placeholder = _dry_run_key(s, as_key)
        header_pairs.append(("X-API-Key", placeholder))
    if as_user:
        header_pairs.append(("Authorization", _dry_run_user(s, as_user)))
    certs = (from_pem("api", cert_file.read_text()),) if cert_file else ()
    try:
        request = CheckRequest.from_url(method, url, header_pairs, None, certs, Settings.from_env().target_allow)
    except BadRequest as exc:
        raise click.BadParameter(f"{url}: {exc}", param_hint="'URL'") from None
    engine = DecisionEngine(load_policy(policy_dir, Context(store=s)))
    decision, explanation = explain(engine, request)
    emit(click.get_current_context(), {**decision.to_json(), "explain": explanation},
         render_text(decision, explanation))


def _dry_run_key(s: StandInStore, key_id: str) -> str:
    """A stand-in secret that this process's store resolves to ``key_id``."""
    return s.stand_in_key(key_id)


def _dry_run_user(s: StandInStore, name: str) -> str:
    """A Basic credential with a stand-in password this process's store accepts for ``name``."""
    import base64

    password = s.stand_in_user(name)
    return "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()


@command(policy, "test")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--policy-dir", default=default_from_env("AUTHZ_POLICY_DIR"), type=click.Path(path_type=Path))
def policy_test(files, policy_dir) -> None:
    """Run policy test cases (default: POLICY_DIR/tests/*.json); exit 1 if any fails."""
    from authz.adapters.client_certs import from_headers
    from authz.engine.testing import run_file

    ctx = click.get_current_context()
    files = files or tuple(sorted(Path(policy_dir, "tests").glob("*.json")))
    if not files:
        raise click.UsageError(f"no test files given and none in {policy_dir}/tests")
    results = [r for file in files for r in run_file(file, policy_dir, from_headers)]
    passed = sum(r.passed for r in results)
    lines = []
    for r in results:
        lines.append(f"{'PASS' if r.passed else 'FAIL'}: {r.file}: {r.name}")
        lines += [f"    {p}" for p in r.problems]
    lines.append(f"policy tests: {passed} passed, {len(results) - passed} failed")
    emit(ctx, {"passed": passed, "failed": len(results) - passed,
               "results": [r.__dict__ for r in results]}, "\n".join(lines))
    if passed != len(results):
        ctx.exit(1)


@command(policy, "init")
@click.option("--profile", required=True, type=click.Choice(["internal-tool", "public-api", "partner", "mobile-spa",
                                                             "microservices", "zero-trust"]))
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def policy_init(profile, directory) -> None:
    """Write a starter policy and its tests into DIRECTORY (best: an empty one)."""
    from authz.policy.profiles import PROFILES, write_profile

    try:
        written = write_profile(profile, directory)
    except FileExistsError as exc:
        raise click.ClickException(str(exc)) from None
    emit(click.get_current_context(), {"profile": profile, "files": [str(p) for p in written]},
         f"{PROFILES[profile]['summary']}\nWrote {', '.join(str(p) for p in written)}.\n"
         f"Try: authz policy test --policy-dir {directory}")
