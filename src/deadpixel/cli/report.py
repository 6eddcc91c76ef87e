"""``deadpixel report``, ``opens`` and ``clicks``: what the store says, as text or JSON.

The hot read path of the command line: it imports the analytics and the store, not the enrichment data,
the web stack or the migrations (unless the store needs migrating).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

import click

from deadpixel.cli.context import Cli, json_option, pass_cli, print_json
from deadpixel.reports import analytics
from deadpixel.reports.variants import ab_test
from deadpixel.store.events import CLICK, OPEN, EventKind


@click.command()
@click.argument("campaign", required=False)
@json_option
@pass_cli
def report(cli: Cli, campaign: str | None, as_json: bool) -> None:
    """Headline numbers for a campaign (or for all messages); with --json, every chart's data too."""
    settings = cli.settings
    with cli.store() as conn:
        cli.fold_rollups()
        if as_json:
            print_json(analytics.campaign_stats(conn, campaign, ZoneInfo(settings.timezone)))
            return
        figures = analytics.report(conn, campaign)
        reasons = analytics.bounce_reasons(conn, campaign)
        waits = analytics.time_to_first_open(conn, campaign)
        test = None if campaign is None else ab_test(conn, campaign)
    click.echo(f"Campaign: {campaign or '(all messages)'}")
    click.echo(f"  sent             {figures['sent']}")
    if figures["untracked"]:
        click.echo(f"  untracked        {figures['untracked']}  (relayed without a pixel; not in sent)")
    over = "sent"
    if figures["bounced"] or figures["soft_bounced"] or figures["complaints"]:
        over = "delivered"
        click.echo(f"  bounced          {figures['bounced']}  ({figures['bounce_rate']:.1%} of sent)")
        click.echo(f"  soft bounced     {figures['soft_bounced']}  (temporary failures; still delivered)")
        click.echo(f"  delivered        {figures['delivered']}")
        click.echo(f"  complaints       {figures['complaints']}")
        _bounce_reasons(reasons)
    click.echo(f"  unique opens     {figures['unique_opens']}  ({figures['open_rate']:.1%} of {over})")
    click.echo(f"    human          {figures['human_opens']}  ({figures['human_open_rate']:.1%} of {over})")
    click.echo(f"    machine only   {figures['machine_opens']}  (Apple prefetch, security scanners)")
    click.echo(f"  total opens      {figures['total_opens']}  ({figures['opens_per_opener']:.1f} per opener)")
    if waits["median_seconds"] is not None:
        median_hours = waits["median_seconds"] / 3600
        click.echo(f"  time to open     median {median_hours:.1f} h to the first human open, over"
                   f" {waits['messages']} messages with a send time")  # fmt: skip
    click.echo(f"  unique clicks    {figures['unique_clicks']}  ({figures['click_rate']:.1%} of {over}, "
               f"{figures['click_to_open_rate']:.1%} of opened)")  # fmt: skip
    click.echo(f"  total clicks     {figures['total_clicks']}  ({figures['human_clicks']} by people,"
               f" {figures['machine_clicks']} by machines)")  # fmt: skip
    if test is not None:
        click.echo(f"  A/B test         {test['statement']}  (deadpixel campaign winner {campaign!r})")


def _bounce_reasons(reasons: dict[str, Any]) -> None:
    """Bounced messages by reason, and the plain word when the sending side is to blame."""
    if reasons["by_reason"]:
        click.echo("  bounces by reason (the latest failure of each bounced message)")
    for reason, n in reasons["by_reason"].items():
        click.echo(f"    {reason:<22} {n}")
    notice = analytics.sender_side_notice(reasons["sender_side"])
    if notice:
        click.echo(f"  note: {notice}")


def _listing(kind: EventKind, doc: str, empty: str, line: Callable[[dict[str, Any]], str]) -> click.Command:
    """The listing command of one event kind: the same options, JSON and order for every kind."""
    plural = f"{kind.name}s"

    @click.command(plural, help=doc)
    @click.option("--campaign", help=f"Only {plural} of this campaign.")
    @click.option("--message", "message_id", help=f"Only {plural} of this message id.")
    @click.option("--limit", type=click.IntRange(1, 1_000_000), default=100, show_default=True)
    @json_option
    @pass_cli
    def listing(cli: Cli, campaign: str | None, message_id: str | None, limit: int, as_json: bool) -> None:
        with cli.store() as conn:
            rows = analytics.list_events(conn, kind, campaign=campaign, message_id=message_id, limit=limit)
        if as_json:
            print_json(rows)
            return
        if not rows:
            click.echo(empty)
            return
        for row in rows:
            click.echo(f"{row['at']}  {row['recipient'] or row['message_id']:<32}  {line(row)}")

    return listing


opens = _listing(
    OPEN,
    "List recorded opens, newest first.",
    "No opens recorded yet.",
    lambda row: f"{row['method']:<4}  {row['ip'] or '-':<15}  {row['user_agent'] or '-'}",
)
clicks = _listing(
    CLICK,
    "List recorded clicks on tracked links, newest first, with their verdict.",
    "No clicks recorded yet.",
    lambda row: f"{row['kind'] or '-':<8}  {row['method']:<4}  {row['url'] or '-'}",
)
