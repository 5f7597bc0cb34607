"""``authz serve`` and ``authz grpc``: start the servers."""

from __future__ import annotations

from pathlib import Path

import click

from authz.cli.base import main
from authz.config import Settings
from authz.policy import PolicyError
from authz.store import StoreError


@main.command("serve")
@click.option("--bind", default="127.0.0.1:8080", show_default=True, help="HOST:PORT to listen on.")
@click.option("--workers", default=0, type=click.IntRange(0, 256), help="Worker processes (default: one per core).")
@click.option("--threads", default=4, show_default=True, type=click.IntRange(1, 64),
              help="Threads per worker running decisions.")
@click.option("--server", type=click.Choice(["granian", "gunicorn"]), default="granian", show_default=True)
@click.option("--policy-dir", type=click.Path(path_type=Path), help="Policy directory.")
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


@main.command("grpc")
@click.option("--bind", default="127.0.0.1:9191", show_default=True, help="HOST:PORT to listen on.")
@click.option("--workers", default=8, show_default=True, type=click.IntRange(1, 256), help="Handler threads.")
@click.option("--policy-dir", type=click.Path(path_type=Path), help="Policy directory.")
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
