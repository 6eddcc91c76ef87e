"""``deadpixel webhook add|list|remove|test|retry|deliver`` (``webhooks`` is the same group)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import click
from sqlalchemy import update

from deadpixel.cli.context import Cli, json_option, pass_cli
from deadpixel.hooks import registry
from deadpixel.hooks.deliver import Deliverer, Policy, new_client, post
from deadpixel.hooks.guard import Guard
from deadpixel.store import audit
from deadpixel.store.db import create_engine
from deadpixel.store.schema import webhook_deliveries


def _iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


@click.group()
def webhook() -> None:
    """POST each open and click, signed, to URLs of your choice (see docs/webhooks.md)."""


@webhook.command("add")
@click.argument("url")
@click.option("--events", default="open,click", show_default=True, help="Which events to send: open, click.")
@pass_cli
def webhook_add(cli: Cli, url: str, events: str) -> None:
    """Add a webhook and print its signing secret: shown this once."""
    guard = Guard.allowing(*cli.settings.webhook_allow)
    url = registry.check_url(url, guard)  # the name is looked up before the transaction begins
    with cli.store() as conn:
        made, secret = registry.add_webhook(conn, url, events, guard)
        audit.record(conn, audit.CLI, "webhook.add", url)
    click.echo(
        f"Webhook {made.id} added for {', '.join(made.events)}. Signing secret (shown only now):", err=True
    )
    click.echo(secret)


@webhook.command("list")
@json_option
@pass_cli
def webhook_list(cli: Cli, as_json: bool) -> None:
    """The webhooks with their deliveries pending, delivered and failed (never their secrets)."""
    with cli.migrated() as engine, engine.connect() as conn:
        found = registry.list_webhooks(conn)
    rows: list[dict[str, Any]] = [
        {"id": w.id, "url": w.url, "events": list(w.events), "created_at": _iso(w.created_at),
         "pending": w.pending, "delivered": w.delivered, "failed": w.failed}
        for w in found
    ]  # fmt: skip
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        click.echo(f"{r['id']}\t{r['url']}\t{','.join(r['events'])}\tpending {r['pending']}\t"
                   f"delivered {r['delivered']}\tfailed {r['failed']}")  # fmt: skip


def _webhook_command(name: str) -> Callable[[Callable[[Cli, int], None]], click.Command]:
    """A ``webhook NAME WEBHOOK_ID`` command: one that acts on the webhook with that id."""

    def register(action: Callable[[Cli, int], None]) -> click.Command:
        return webhook.command(name)(click.argument("webhook_id", type=int)(pass_cli(action)))

    return register


@_webhook_command("remove")
def webhook_remove(cli: Cli, webhook_id: int) -> None:
    """Remove a webhook; its undelivered events are dropped with it."""
    with cli.store() as conn:
        removed = registry.remove_webhook(conn, webhook_id)
        audit.record(conn, audit.CLI, "webhook.remove", f"{webhook_id} {removed.url}")
    click.echo(f"Webhook {removed.id} ({removed.url}) removed.")


@_webhook_command("test")
def webhook_test(cli: Cli, webhook_id: int) -> None:
    """Send a signed ``test`` event to a webhook now and print what its receiver answered."""
    settings = cli.settings
    with cli.migrated() as engine, engine.connect() as conn:
        found, secret = registry.get_webhook(conn, webhook_id)
    event_id = uuid.uuid4().hex
    body = json.dumps({"id": event_id, "type": "test", "at": time.time()}, separators=(",", ":")).encode()
    with new_client(Policy.from_settings(settings)) as client:
        outcome = post(client, found.url, secret, "test", event_id, body)
    if not outcome.ok:
        raise click.ClickException(f"webhook {webhook_id}: {outcome.error} ({outcome.detail})")
    click.echo(f"Webhook {webhook_id} answered {outcome.status}.")


@_webhook_command("retry")
def webhook_retry(cli: Cli, webhook_id: int) -> None:
    """Send a webhook's failed deliveries again (after fixing its receiver)."""
    d = webhook_deliveries.c
    with cli.store() as conn:
        registry.get_webhook(conn, webhook_id)
        again = conn.execute(
            update(webhook_deliveries)
            .where(d.webhook_id == webhook_id, d.status == "failed")
            .values(status="pending", attempts=0, next_attempt_at=time.time())
        ).rowcount
    click.echo(f"{again} failed deliveries of webhook {webhook_id} will be sent again.")


@webhook.command("deliver")
@pass_cli
def webhook_deliver(cli: Cli) -> None:
    """Send every delivery that is due now, once, then stop (``deadpixel serve`` does this all along)."""
    settings = cli.settings
    with cli.migrated() as engine:
        writer = create_engine(settings.database_url, writer=True)
        deliverer = Deliverer(engine, writer, Policy.from_settings(settings))
        try:
            deliverer.drain()
        finally:
            deliverer.close()
            writer.dispose()
        stats = deliverer.stats
        with engine.connect() as conn:
            left = registry.backlog(conn)
    click.echo(f"Delivered {stats.delivered}, to retry {stats.retried}, failed {stats.failed}; "
               f"{left['pending']} pending, {left['failed']} failed in all.")  # fmt: skip
