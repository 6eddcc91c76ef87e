"""``deadpixel pixel new`` and ``deadpixel demo``: tracked messages made by hand, and demo data."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from deadpixel.cli.context import Cli, json_option, pass_cli, print_json, recipient_address

if TYPE_CHECKING:
    from deadpixel.mail.addresses import Recipient


@click.group()
def pixel() -> None:
    """Tracking pixels to paste into mail you send yourself."""


@pixel.command("new")
@click.option("--to", "to", callback=recipient_address, required=True, help="Recipient's address.")
@click.option("--subject", help="Subject, to recognise the message in reports.")
@click.option("--campaign", help="Campaign to group the message under (created if new).")
@click.option(
    "--notify", is_flag=True, help="Tell me when the recipient first reads it (docs/notifications.md)."
)
@json_option
@pass_cli
def pixel_new(
    cli: Cli, to: Recipient, subject: str | None, campaign: str | None, notify: bool, as_json: bool
) -> None:
    """Create a tracked message and print its pixel."""
    from deadpixel.reports.pixels import new_pixel
    from deadpixel.security.keys import load_or_create_keys
    from deadpixel.security.tokens import TokenSigner

    settings = cli.settings
    with cli.store() as conn:  # creates the data dir the signing keys live in
        signer = TokenSigner(load_or_create_keys(settings.keys_file))
        result = new_pixel(
            conn, settings, signer, recipient=to.address, subject=subject, campaign=campaign, notify=notify
        )
    if as_json:
        print_json(result)
        return
    click.echo(f"Tracked message {result['message_id']} to {to.address}")
    click.echo(f"Pixel URL: {result['url']}")
    click.echo("Paste this HTML at the end of your message (it is invisible):")
    click.echo(result["html"])


@click.command()
@click.option("--messages", type=click.IntRange(10, 100_000), default=2000, show_default=True)
@pass_cli
def demo(cli: Cli, messages: int) -> None:
    """Seed a realistic demo campaign (people, Apple prefetches, scanners, proxies, clicks) to look around."""
    from deadpixel import demo as demo_data
    from deadpixel.enrich.opens import OpenClassifier
    from deadpixel.store.messages import campaign_id

    settings = cli.settings
    with cli.store() as conn:
        if campaign_id(conn, demo_data.CAMPAIGN, create=False) is not None:
            raise click.ClickException(f"the campaign {demo_data.CAMPAIGN!r} is already there")
        made = demo_data.seed(conn, OpenClassifier.from_settings(settings), messages)
    click.echo(
        f"Seeded {made.campaign!r}: {made.messages} messages, {made.opens} opens, {made.clicks} clicks."
        f" See it at {settings.base_url}/campaigns or with: deadpixel report {made.campaign!r}"
    )
