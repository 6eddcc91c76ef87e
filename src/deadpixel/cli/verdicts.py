"""``deadpixel classify``, ``reclassify`` and ``networks update``: the rules behind every verdict."""

from __future__ import annotations

from dataclasses import replace

import click

from deadpixel.cli.context import Cli, json_option, pass_cli, print_json


@click.command()
@click.option("--user-agent", "user_agent", required=True, help="The User-Agent header of the request.")
@click.option("--ip", help="The client address.")
@click.option("--method", type=click.Choice(["GET", "HEAD"], case_sensitive=False), default="GET")
@click.option("--seconds-after-send", type=float, help="Seconds between sending and this request, if known.")
@click.option("--click", "is_click", is_flag=True, help="Judge a click on a tracked link, not an open.")
@click.option(
    "--links-followed",
    type=click.IntRange(1, 10_000),
    default=1,
    help="With --click: different links of the message this address followed, this one included.",
)
@click.option(
    "--within",
    type=click.FloatRange(0, 86_400),
    default=0.0,
    help="With --click: seconds between the first and the last of those links.",
)
@click.option("--hidden-link", is_flag=True, help="With --click: the request followed the hidden link.")
@click.option(
    "--opened-before/--not-opened-before",
    default=None,
    help="With --click: whether a person had opened the message before the click.",
)
@json_option
@pass_cli
def classify(
    cli: Cli,
    user_agent: str,
    ip: str | None,
    method: str,
    seconds_after_send: float | None,
    is_click: bool,
    links_followed: int,
    within: float,
    hidden_link: bool,
    opened_before: bool | None,
    as_json: bool,
) -> None:
    """Explain how one request would be counted: client, device, OS, place and verdict with its reason."""
    from deadpixel.enrich.clicks import ClickContext, ClickJudge
    from deadpixel.enrich.opens import enricher_from_settings

    enricher = enricher_from_settings(replace(cli.settings, enrichment=True))
    assert enricher is not None
    click_only = links_followed != 1 or within != 0.0 or hidden_link or opened_before is not None
    if click_only and not is_click:
        raise click.UsageError("--links-followed, --within, --hidden-link and --opened-before need --click")
    if is_click:
        context = ClickContext(
            hidden=hidden_link, links_followed=links_followed, within=within, opened_before=opened_before
        )
        found = ClickJudge(enricher).enrich_click(
            ip, user_agent, method.upper(), None, seconds_after_send, context
        )
    else:
        found = enricher.enrich(
            ip=ip, user_agent=user_agent, method=method.upper(), seconds_after_send=seconds_after_send
        )
    result = found._asdict()
    if as_json:
        print_json(result)
        return
    click.echo(f"{found.kind}: {found.reason}")
    click.echo(f"  client {found.client}, device {found.device}, OS {found.os}")
    if found.country or found.network_owner:
        click.echo(f"  from {found.country or '?'} ({found.network_owner or 'unknown network'})")


@click.command()
@pass_cli
def reclassify(cli: Cli) -> None:
    """Rerun enrichment and verdicts over every stored open and click (each by its own rules), and rebuild
    counts."""
    from deadpixel.enrich.opens import OpenClassifier, enricher_from_settings
    from deadpixel.reclassify import reclassify as rejudge
    from deadpixel.store.events import CLICK, OPEN

    settings = cli.settings
    with cli.store() as conn:
        classifier = OpenClassifier(enricher_from_settings(settings), settings.ip_mode)
        n = rejudge(conn, classifier, OPEN)
        n_clicks = rejudge(conn, classifier, CLICK)
    cli.fold_rollups()  # reclassify emptied them: rebuild now, not on the next page view
    click.echo(f"Reclassified {n} opens and {n_clicks} clicks.")


@click.group()
def networks() -> None:
    """The lists of proxy and scanner networks that verdicts use."""


@networks.command("update")
@pass_cli
def networks_update(cli: Cli) -> None:
    """Fetch the official lists (Microsoft EOP, Apple's relay egress, Google's fetchers); needs internet.

    Fresher copies go to the data dir and replace the shipped ones; run `deadpixel reclassify` afterwards to
    apply them to opens already recorded.
    """
    from deadpixel.config import ensure_data_dir
    from deadpixel.enrich.opens import networks_dir
    from deadpixel.enrich.update import update_networks

    settings = cli.settings
    ensure_data_dir(settings)
    counts, failures = update_networks(networks_dir(settings))
    for name, count in counts.items():
        click.echo(f"{name}: {count} ranges")
    for name, reason in failures.items():
        click.echo(f"{name}: not updated ({reason})", err=True)
    if failures:
        failed, total = len(failures), len(counts) + len(failures)
        raise click.ClickException(f"{failed} of {total} lists not updated; their previous files stay in use")
