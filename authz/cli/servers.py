"""``authz serve`` and ``authz grpc``: start the servers."""

from __future__ import annotations

from pathlib import Path

import click

from authz.cli.base import main
from authz.config import Settings
from authz.errors import AuthzError


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
    from authz.adapters.envoy_grpc import GrpcServer

    try:
        settings = Settings.from_env(db_path=click.get_current_context().obj["db"], policy_dir=policy_dir)
        server = GrpcServer(settings, bind, workers)
    except (AuthzError, OSError) as exc:
        raise click.ClickException(f"refusing to start:\n{exc}") from None
    server.run(say=lambda line: click.echo(line, err=True))
