"""The ``authz`` command line: a thin skin over ``authz.store`` and ``authz.policy``.

Every command takes ``--json`` for scripts. Bad input fails with one line on stderr
and a non-zero exit, before anything is written.
"""

from __future__ import annotations

import os
import sys


def _command_name(argv: list[str]) -> str | None:
    args = iter(argv)
    for arg in args:
        if arg == "--db":
            next(args, None)
        elif not arg.startswith("-"):
            return arg
    return None


# The CLI never touches the servers' multi-process metrics state (a missing directory
# crashed every command; a present one collected a file per run): its metrics stay in
# memory, unless this process is a server itself (``authz grpc``). This must happen
# before anything imports prometheus_client, which reads the variable once.
if _command_name(sys.argv[1:]) not in ("grpc", "serve"):
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)

import datetime as dt  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import sqlite3  # noqa: E402
import time  # noqa: E402
from functools import wraps  # noqa: E402
from pathlib import Path  # noqa: E402

import click  # noqa: E402

from authz import passwords  # noqa: E402
from authz.authenticators import Context  # noqa: E402
from authz.config import Settings  # noqa: E402
from authz.identity_token import keep_retired_for  # noqa: E402
from authz.policy import PolicyError  # noqa: E402
from authz.store import Store, StoreError  # noqa: E402

_DURATION = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str, option: str = "duration") -> int:
    """``90d`` / ``12h`` / ``30m`` / ``45s`` / ``2w`` (or combined, ``1d12h``) → seconds."""
    text = text.strip().lower()
    if not text or _DURATION.sub("", text):
        raise click.BadParameter(
            f"{text!r} is not a duration like 90d, 12h, 30m, 45s or 2w", param_hint=option
        )
    return sum(int(n) * _UNITS[unit] for n, unit in _DURATION.findall(text))


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def ago(ts: float | None) -> str:
    if ts is None:
        return "never"
    seconds = max(0, int(time.time() - ts))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def emit(ctx: click.Context, data, text: str) -> None:
    if ctx.obj.get("json"):
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        click.echo(text)


def command(group: click.Group, name: str | None = None, **kwargs):
    """A subcommand with ``--json`` and one-line errors for store and policy problems."""

    def decorate(func):
        @group.command(name, **kwargs)
        @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
        @click.pass_context
        @wraps(func)
        def wrapper(ctx, as_json, **params):
            ctx.obj["json"] = as_json
            try:
                return ctx.invoke(func, **params)
            except (StoreError, ValueError) as exc:
                raise click.ClickException(str(exc)) from None
            except sqlite3.Error as exc:  # one line, never a traceback
                raise click.ClickException(f"credential store {ctx.obj['db']}: {exc}") from None
            except OSError as exc:
                raise click.ClickException(f"{exc.filename or ctx.obj['db']}: {exc.strerror or exc}") from None

        return wrapper

    return decorate


@click.group()
@click.option("--db", envvar="AUTHZ_DB", default="authz.db", show_default=True,
              type=click.Path(dir_okay=False, path_type=Path), help="SQLite credential store.")
@click.pass_context
def main(ctx: click.Context, db: Path) -> None:
    """authz: authentication decisions for reverse proxies."""
    ctx.ensure_object(dict)
    ctx.obj["db"] = db


def store(ready: bool = True) -> Store:
    db = click.get_current_context().obj["db"]
    s = Store(db)
    if ready:
        s.check_ready()
    return s


# ---------------------------------------------------------------------------- db
@main.group()
def db() -> None:
    """The credential store."""


@command(db, "init")
def db_init() -> None:
    """Create the store, or migrate it to the current schema."""
    s = store(ready=False)
    old, new = s.migrate()
    s.signing_keys.ensure(keep_retired_for(Settings.from_env().identity_token_ttl))
    ctx = click.get_current_context()
    text = f"{s.path}: created at schema version {new}" if old == 0 else (
        f"{s.path}: migrated from schema version {old} to {new}" if old != new
        else f"{s.path}: already at schema version {new}")
    emit(ctx, {"path": str(s.path), "from_version": old, "version": new}, text)


# -------------------------------------------------------------------------- keys
@main.group()
def keys() -> None:
    """API keys: create, list, rotate, revoke."""


@command(keys, "create")
@click.option("--principal", required=True, help="Who the key acts for (created as a client if new).")
@click.option("--scope", "scopes", multiple=True, help="Scope granted (repeatable).")
@click.option("--env", type=click.Choice(["live", "test"]), default="live", show_default=True)
@click.option("--allow-ip", "allow_ips", multiple=True, help="CIDR the key may be used from (repeatable).")
@click.option("--expires-in", help="Lifetime, e.g. 90d.")
def keys_create(principal, scopes, env, allow_ips, expires_in) -> None:
    """Create a key and print it once."""
    expires_at = time.time() + parse_duration(expires_in, "'--expires-in'") if expires_in else None
    record, secret = store().keys.create(principal, scopes, env, allow_ips, expires_at)
    emit(click.get_current_context(), {**record, "key": secret},
         f"Created {record['id']} for {principal} ({env}; scopes: {' '.join(scopes) or '-'}; "
         f"expires: {when(expires_at)})\n{secret}\n"
         "Store this key now: it is not kept and will not be shown again.")


@command(keys, "list")
@click.option("--principal", help="Only this principal's keys.")
def keys_list(principal) -> None:
    """Keys with their status, rotation and last use (never the secret)."""
    records = store().keys.list(principal)
    rows = [("ID", "PRINCIPAL", "KEY", "ENV", "STATUS", "SCOPES", "CREATED", "EXPIRES",
             "LAST USED", "ROTATION")]
    for r in records:
        rotation = (f"-> {r['replaced_by']}" if r["replaced_by"] else
                    f"<- {r['rotated_from']}" if r["rotated_from"] else "-")
        rows.append((r["id"], r["principal"], r["display"], r["env"], r["status"],
                     " ".join(r["scopes"]) or "-", when(r["created_at"]), when(r["expires_at"]),
                     ago(r["last_used_at"]), rotation))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    text = "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)
    emit(click.get_current_context(), records, text if records else "no API keys")


@command(keys, "revoke")
@click.argument("key_id")
def keys_revoke(key_id) -> None:
    """Revoke a key: refused from the next request on."""
    record = store().keys.revoke(key_id)
    emit(click.get_current_context(), record, f"Revoked {key_id} ({record['principal']})")


@command(keys, "rotate")
@click.argument("key_id")
@click.option("--grace", default="7d", show_default=True, help="How long the old key keeps working.")
def keys_rotate(key_id, grace) -> None:
    """Issue a successor; the old key stays valid for the grace period."""
    old, new, secret = store().keys.rotate(key_id, parse_duration(grace, "'--grace'"))
    emit(click.get_current_context(), {"old": old, "new": {**new, "key": secret}},
         f"Created {new['id']} for {new['principal']} to replace {key_id}\n{secret}\n"
         f"Store this key now: it is not kept and will not be shown again.\n"
         f"{key_id} keeps working until {when(old['expires_at'])}; `authz keys list` shows "
         "when it was last used.")


# ------------------------------------------------------------------------- users
@main.group()
def users() -> None:
    """Users for Basic auth."""


def read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        raise click.UsageError("no terminal to ask for the password: use --password-stdin")
    if not password:
        raise click.UsageError("empty password")
    return password


@command(users, "add")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--scope", "scopes", multiple=True)
@click.option("--role", "roles", multiple=True)
def users_add(name, password_stdin, scopes, roles) -> None:
    """Add a user with an Argon2id-hashed password."""
    s = store()
    password = read_password(password_stdin)
    s.principals.add_user(name, passwords.hash_password(password), scopes, roles)
    emit(click.get_current_context(), {"name": name, "scopes": list(scopes), "roles": list(roles)},
         f"Added user {name}")


@command(users, "passwd")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def users_passwd(name, password_stdin) -> None:
    """Change a user's password (effective on the next request)."""
    s = store()
    if s.principals.find_user(name) is None:
        raise StoreError(f"no user named {name!r}")
    s.principals.set_password(name, passwords.hash_password(read_password(password_stdin)))
    emit(click.get_current_context(), {"name": name}, f"Changed the password of {name}")


@command(users, "disable")
@click.argument("name")
def users_disable(name) -> None:
    """Disable a principal: its password and keys are refused from the next request."""
    store().principals.set_disabled(name, True)
    emit(click.get_current_context(), {"name": name, "disabled": True}, f"Disabled {name}")


@command(users, "enable")
@click.argument("name")
def users_enable(name) -> None:
    """Enable a disabled principal again."""
    store().principals.set_disabled(name, False)
    emit(click.get_current_context(), {"name": name, "disabled": False}, f"Enabled {name}")


@command(users, "list")
def users_list() -> None:
    """Principals with their kind, scopes, roles and state."""
    records = store().principals.list()
    text = "\n".join(
        f"{r['name']}  {r['kind']}  scopes={' '.join(r['scopes']) or '-'}  "
        f"roles={' '.join(r['roles']) or '-'}{'  DISABLED' if r['disabled'] else ''}"
        for r in records
    )
    emit(click.get_current_context(), records, text or "no principals")


@command(users, "import-htpasswd")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--scope", "scopes", multiple=True, help="Scope for every imported user.")
@click.option("--role", "roles", multiple=True, help="Role for every imported user.")
@click.option("--skip-unsupported", is_flag=True,
              help="Import the acceptable lines even if others are refused.")
def users_import_htpasswd(file, scopes, roles, skip_unsupported) -> None:
    """Import users from an Apache/nginx htpasswd file (bcrypt; see docs for refusals)."""
    s = store()
    accepted, refused = [], []
    for number, line in enumerate(file.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, colon, stored = line.partition(":")
        if not colon:
            refused.append({"line": number, "user": None, "why": "no ':' separating user and hash"})
            continue
        try:
            passwords.check_importable(stored)
            if s.principals.find_user(name) is not None:
                raise StoreError("a user of that name exists already")
            accepted.append((name, stored))
        except (passwords.UnsupportedHash, StoreError) as exc:
            refused.append({"line": number, "user": name, "why": str(exc)})
    if refused and not skip_unsupported:
        lines = "; ".join(f"line {r['line']} ({r['user']}): {r['why']}" for r in refused)
        raise click.ClickException(
            f"nothing imported: {len(refused)} line(s) refused — {lines} "
            "(fix them or pass --skip-unsupported)"
        )
    for name, stored in accepted:
        s.principals.add_user(name, stored, scopes, roles)
    emit(click.get_current_context(),
         {"imported": [n for n, _ in accepted], "refused": refused},
         f"Imported {len(accepted)} user(s)" + (f", refused {len(refused)}: " + "; ".join(
             f"line {r['line']} ({r['user']}): {r['why']}" for r in refused) if refused else ""))


# ------------------------------------------------------------------------ tokens
@main.group()
def tokens() -> None:
    """Revocation of bearer JWTs by their jti."""


def _unverified_claims(text: str) -> dict:
    import base64

    parts = text.strip().split(".")
    if len(parts) != 3:
        raise click.BadParameter("not a JWT (three dot-separated parts)", param_hint="'--token'")
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        raise click.BadParameter("the JWT payload is not base64url JSON", param_hint="'--token'") from None
    if not isinstance(claims, dict):
        raise click.BadParameter("the JWT payload is not a JSON object", param_hint="'--token'")
    return claims


@command(tokens, "revoke")
@click.option("--jti", help="The token id to refuse from now on.")
@click.option("--issuer", help="Only for this issuer (default: a token with this jti from any issuer).")
@click.option("--token", "token_file", type=click.File("r"),
              help="Read jti, iss and exp from the token itself ('-' for stdin; nothing is verified or kept).")
@click.option("--for", "keep_for", default="30d", show_default=True,
              help="How long to keep the revocation when the token's exp is unknown.")
def tokens_revoke(jti, issuer, token_file, keep_for) -> None:
    """Refuse a JWT by jti from the next request on, until it would have expired."""
    expires_at = time.time() + parse_duration(keep_for, "'--for'")
    if token_file is not None:
        claims = _unverified_claims(token_file.read())
        if not isinstance(claims.get("jti"), str):
            raise click.BadParameter("the token has no jti claim: it cannot be revoked by id",
                                     param_hint="'--token'")
        jti = jti or claims["jti"]
        issuer = issuer or claims.get("iss")
        if isinstance(claims.get("exp"), int | float):
            expires_at = float(claims["exp"]) + 300  # beyond any configured leeway
    if not jti:
        raise click.UsageError("give --jti or --token")
    record = store().revocations.add("jti", jti, issuer or "", expires_at)
    emit(click.get_current_context(), record,
         f"Revoked jti {jti}{' of ' + issuer if issuer else ' (any issuer)'} until {when(record['expires_at'])}")


@command(tokens, "list")
def tokens_list() -> None:
    """Revoked token ids still on record."""
    records = store().revocations.list("jti")
    text = "\n".join(f"{r['value']}  issuer={r['issuer'] or '*'}  until {when(r['expires_at'])}" for r in records)
    emit(click.get_current_context(), records, text or "no revoked tokens")


# ------------------------------------------------------------------------- certs
@main.group()
def certs() -> None:
    """Client certificates: register to a principal, revoke."""


def _read_cert(path: Path):
    from cryptography import x509

    data = path.read_bytes()
    try:
        return x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data else x509.load_der_x509_certificate(data)
    except ValueError:
        raise click.BadParameter(f"{path} is not a PEM or DER certificate", param_hint="'--file'") from None


def _cert_facts(path: Path) -> tuple[str, str, str, float]:
    from cryptography.hazmat.primitives import hashes

    cert = _read_cert(path)
    return (cert.fingerprint(hashes.SHA256()).hex(), cert.issuer.rfc4514_string(), format(cert.serial_number, "x"),
            cert.not_valid_after_utc.timestamp())


_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@command(certs, "add")
@click.option("--principal", required=True, help="The service this certificate identifies.")
@click.option("--fingerprint", help="SHA-256 of the DER, hex (any case, colons allowed).")
@click.option("--file", "cert_file", type=_FILE, help="The certificate (PEM or DER).")
def certs_add(principal, fingerprint, cert_file) -> None:
    """Register a certificate (mtls principal_from: registered)."""
    if bool(fingerprint) == bool(cert_file):
        raise click.UsageError("give exactly one of --fingerprint or --file")
    subject = not_after = None
    if cert_file:
        fingerprint, _, _, not_after = _cert_facts(cert_file)
        subject = _read_cert(cert_file).subject.rfc4514_string()
    record = store().certificates.register(principal, fingerprint, subject, not_after)
    emit(click.get_current_context(), record, f"Registered {record['fingerprint']} to {principal}")


@command(certs, "revoke")
@click.option("--fingerprint", help="SHA-256 of the DER, hex (any case, colons allowed).")
@click.option("--file", "cert_file", type=_FILE, help="The certificate (PEM or DER).")
@click.option("--issuer", help="Issuer DN (RFC 4514, e.g. 'CN=Mesh CA,O=Corp'), with --serial.")
@click.option("--serial", help="Serial number in hex, with --issuer.")
def certs_revoke(fingerprint, cert_file, issuer, serial) -> None:
    """Refuse a certificate from the next request on."""
    given = [bool(fingerprint), bool(cert_file), bool(issuer or serial)]
    if sum(given) != 1 or ((issuer or serial) and not (issuer and serial)):
        raise click.UsageError("give exactly one of --fingerprint, --file, or --issuer with --serial")
    s = store()
    if cert_file:
        fp, cert_issuer, cert_serial, not_after = _cert_facts(cert_file)
        record = s.certificates.revoke_fingerprint(fp, not_after)
        s.certificates.revoke_serial(cert_issuer, cert_serial, not_after)
    elif fingerprint:
        record = s.certificates.revoke_fingerprint(fingerprint)
    else:
        record = s.certificates.revoke_serial(issuer, serial)
    what = (f"serial {record['value']} of {record['issuer']}" if record["kind"] == "cert_serial"
            else f"certificate {record['value']}")
    emit(click.get_current_context(), record, f"Revoked {what}")


@command(certs, "list")
def certs_list() -> None:
    """Registered and revoked certificates."""
    s = store()
    registered = s.certificates.list()
    revoked = [r for r in s.revocations.list() if r["kind"] != "jti"]
    lines = [f"registered {r['fingerprint']}  {r['principal']}  {r['subject'] or ''}".rstrip() for r in registered]
    lines += [f"revoked    {r['value']}  {r['issuer'] or ''}".rstrip() for r in revoked]
    emit(click.get_current_context(), {"registered": registered, "revoked": revoked},
         "\n".join(lines) or "no certificates")


# ------------------------------------------------------------------ signing keys
@main.group("signing-keys")
def signing_keys() -> None:
    """authz's own keys for the X-Auth-Token identity JWT."""


@command(signing_keys, "rotate")
def signing_keys_rotate() -> None:
    """New signing key; the old one stays published until its tokens have expired."""
    record = store().signing_keys.rotate(keep_retired_for(Settings.from_env().identity_token_ttl))
    emit(click.get_current_context(), record,
         f"Signing with {record['kid']} from now on (workers pick it up within seconds)"
         + (f"; {', '.join(record['retired'])} published until {when(record['old_published_until'])}"
            if record["retired"] else ""))


@command(signing_keys, "list")
def signing_keys_list() -> None:
    """Signing keys, newest first."""
    records = store().signing_keys.list()
    emit(click.get_current_context(), records, "\n".join(
        f"{r['kid']}  {r['algorithm']}  {r['status']}  created {when(r['created_at'])}"
        + (f"  published until {when(r['publish_until'])}" if r["publish_until"] else "") for r in records)
        or "no signing keys")


# ------------------------------------------------------------------------- serve
@main.command("serve")
@click.option("--bind", default="127.0.0.1:8080", show_default=True, help="HOST:PORT to listen on.")
@click.option("--workers", default=0, type=click.IntRange(0, 256), help="Worker processes (default: one per core).")
@click.option("--threads", default=4, show_default=True, type=click.IntRange(1, 64),
              help="Threads per worker running decisions.")
@click.option("--server", type=click.Choice(["granian", "gunicorn"]), default="granian", show_default=True)
@click.option("--policy-dir", envvar="AUTHZ_POLICY_DIR", type=click.Path(path_type=Path), help="Policy directory.")
def serve_command(bind, workers, threads, server, policy_dir) -> None:
    """Serve the HTTP front doors (nginx, Envoy HTTP, Traefik, Caddy, /v1/decisions)."""
    import os

    from authz import serve

    # Workers read their configuration from the environment: the options become it.
    os.environ["AUTHZ_DB"] = str(click.get_current_context().obj["db"])
    if policy_dir is not None:
        os.environ["AUTHZ_POLICY_DIR"] = str(policy_dir)
    try:
        options = serve.ServeOptions.parse_bind(bind, workers=workers, threads=threads, server=server)
    except serve.ServeError as exc:
        raise click.ClickException(str(exc)) from None
    serve.exec_fresh(options)


# -------------------------------------------------------------------------- grpc
@main.command("grpc")
@click.option("--bind", default="127.0.0.1:9191", show_default=True, help="HOST:PORT to listen on.")
@click.option("--workers", default=8, show_default=True, type=click.IntRange(1, 256), help="Handler threads.")
@click.option("--policy-dir", envvar="AUTHZ_POLICY_DIR", type=click.Path(path_type=Path), help="Policy directory.")
def grpc_command(bind, workers, policy_dir) -> None:
    """Serve Envoy's ext_authz gRPC API (envoy.service.auth.v3.Authorization)."""
    import signal
    import threading

    from authz.adapters.envoy_grpc import make_server
    from authz.app import build_state
    from authz.config import SettingsError

    ctx = click.get_current_context()
    try:
        settings = Settings.from_env(db_path=ctx.obj["db"], policy_dir=policy_dir)
        state = build_state(settings)
        server, port = make_server(state, bind, workers)
    except (PolicyError, StoreError, SettingsError, OSError) as exc:
        raise click.ClickException(f"refusing to start:\n{exc}") from None
    stopping = threading.Event()

    def stop(signum, frame) -> None:
        stopping.set()

    def reload(signum, frame) -> None:
        threading.Thread(target=forced_check, daemon=True).start()

    def forced_check() -> None:
        state.reloader.check(force=True)
        if state.reloader.error is not None:
            click.echo(f"authz grpc: reload refused, keeping revision {state.engine.policy.revision}:\n"
                       f"{state.reloader.error}", err=True)
        else:
            click.echo(f"authz grpc: policy revision {state.engine.policy.revision}", err=True)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reload)
    server.start()
    state.reloader.ensure_running()
    click.echo(f"authz grpc: listening on {bind.rsplit(':', 1)[0]}:{port}, "
               f"policy revision {state.engine.policy.revision}", err=True)
    while not stopping.wait(1.0):
        pass
    click.echo("authz grpc: shutting down (finishing calls in flight)", err=True)
    server.stop(grace=5).wait()


# ------------------------------------------------------------------------ policy
@main.group()
def policy() -> None:
    """Policy files."""


@command(policy, "check")
@click.argument("directory", required=False, envvar="AUTHZ_POLICY_DIR", default="policies",
                type=click.Path(path_type=Path))
@click.option("--strict", is_flag=True, help="Exit 2 when there are warnings.")
def policy_check(directory, strict) -> None:
    """Validate a policy directory: errors (exit 1) and warnings (exit 2 with --strict)."""
    from authz.policy import compile_policy, read_policy_dir
    from authz.policy.lint import warnings

    ctx = click.get_current_context()
    try:
        source = read_policy_dir(directory)
        compiled = compile_policy(source, Context(store=Store(":memory:")))
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
@click.option("--policy-dir", envvar="AUTHZ_POLICY_DIR", default="policies", type=click.Path(path_type=Path))
def policy_explain(method, url, headers, cert_file, as_key, as_user, policy_dir) -> None:
    """Why a request would be allowed or denied: routes, requirement tree, decision."""
    from authz.certs import from_pem
    from authz.engine import DecisionEngine
    from authz.policy import load_policy
    from authz.policy.explain import explain, render_text
    from authz.request import BadRequest, CheckRequest, split_absolute

    s = store()
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
    try:
        scheme, host, target = split_absolute(url)
        certs = (from_pem("api", cert_file.read_text()),) if cert_file else ()
        request = CheckRequest.build(method, target, host, scheme, header_pairs, None, certs,
                                     Settings.from_env().target_allow)
    except BadRequest as exc:
        raise click.BadParameter(f"{url}: {exc}", param_hint="'URL'") from None
    engine = DecisionEngine(load_policy(policy_dir, Context(store=s)))
    decision, explanation = explain(engine, request)
    emit(click.get_current_context(), {**decision.to_json(), "explain": explanation},
         render_text(decision, explanation))


def _dry_run_key(s: Store, key_id: str) -> str:
    """A stand-in secret that this process's store resolves to ``key_id``."""
    from authz import apikeys

    match = s.keys.find_by_id(key_id)
    if match is None:
        raise StoreError(f"no API key with id {key_id!r}")
    placeholder = apikeys.generate(match.env)
    fingerprint = apikeys.fingerprint(placeholder)
    real_find = s.keys.find
    s.keys.find = lambda fp: match._replace(hash=fp) if fp == fingerprint else real_find(fp)  # type: ignore[method-assign]
    s.last_used.record = lambda key_id: None  # type: ignore[method-assign]  # a dry run is no use
    return placeholder


def _dry_run_user(s: Store, name: str) -> str:
    import base64
    import secrets

    user = s.principals.find_user(name)
    if user is None:
        raise StoreError(f"no user named {name!r}")
    password = secrets.token_urlsafe(16)
    stand_in = user._replace(password_hash=passwords.hash_password(password))
    real_find = s.principals.find_user
    s.principals.find_user = lambda n: stand_in if n == name else real_find(n)  # type: ignore[method-assign]
    return "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()


@command(policy, "test")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--policy-dir", envvar="AUTHZ_POLICY_DIR", default="policies", type=click.Path(path_type=Path))
def policy_test(files, policy_dir) -> None:
    """Run policy test cases (default: POLICY_DIR/tests/*.json); exit 1 if any fails."""
    from authz.policy.testing import run_file

    ctx = click.get_current_context()
    files = files or tuple(sorted(Path(policy_dir, "tests").glob("*.json")))
    if not files:
        raise click.UsageError(f"no test files given and none in {policy_dir}/tests")
    results = [r for file in files for r in run_file(file, policy_dir)]
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
