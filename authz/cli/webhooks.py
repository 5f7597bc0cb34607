"""``authz webhooks``: the signing secret, delivering from cron, and the outbox."""

from __future__ import annotations

import time

import click

from authz.cli.base import admin, command, emit, main, when
from authz.cli.keys import _table
from authz.config import Settings
from authz.errors import AuthzError

STATES = ("pending", "delivered", "failed")


@main.group()
def webhooks() -> None:
    """Webhook events (keys expiring, grace periods ended, anomalies): secret, deliver, list."""


@command(webhooks, "secret")
def webhooks_secret() -> None:
    """Print a new AUTHZ_WEBHOOK_SECRET (give the same value to the receiver)."""
    from authz.credentials.webhook_signature import new_secret

    secret = new_secret()
    emit(click.get_current_context(), {"secret": secret}, secret)


@command(webhooks, "deliver")
@click.option("--for", "budget", default=60.0, show_default=True, type=click.FloatRange(1, 3600),
              help="Seconds at most to keep delivering.")
def webhooks_deliver(budget) -> None:
    """Look for expiry events and deliver what is due, once (for cron; servers with
    AUTHZ_WEBHOOK_URL set do this by themselves every AUTHZ_WEBHOOK_INTERVAL)."""
    from authz.webhooks.runner import WebhookRunner

    settings = Settings.from_env()
    runner = WebhookRunner.from_settings(settings, admin().store)
    if runner is None:
        raise AuthzError("AUTHZ_WEBHOOK_URL is not set: nowhere to deliver to")
    deadline = time.monotonic() + budget
    report = runner.run_once()
    total = report.to_json()
    while report.delivery.delivered + report.delivery.retrying + report.delivery.given_up and (
            time.monotonic() < deadline):
        report = runner.run_once()
        for name, value in report.to_json().items():
            total[name] += value
    emit(click.get_current_context(), total,
         f"{total['enqueued']} new event(s); delivered {total['delivered']}, to retry {total['retrying']}, "
         f"given up {total['given_up']}")


@command(webhooks, "list")
@click.option("--state", type=click.Choice(STATES), help="Only events in this state.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
def webhooks_list(state, limit) -> None:
    """Events in the outbox, newest first (delivered and given-up ones are kept 7 days)."""
    events = admin().store.outbox.list(state, limit)
    rows = [("ID", "TYPE", "STATE", "ATTEMPTS", "CREATED", "NEXT / FINISHED", "LAST ERROR")]
    for e in events:
        rows.append((e.id, e.type, e.state, str(e.attempts), when(e.created_at),
                     when(e.next_attempt_at if e.state == "pending" else e.finished_at), e.last_error or "-"))
    emit(click.get_current_context(), [e.to_json() for e in events], _table(rows) if events else "no webhook events")
