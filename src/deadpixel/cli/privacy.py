"""``deadpixel forget`` and ``deadpixel purge``: erasing a person, and dropping old raw detail."""

from __future__ import annotations

import click

from deadpixel.cli.context import Cli, pass_cli


@click.command()
@click.argument("address")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_cli
def forget(cli: Cli, address: str, yes: bool) -> None:
    """Erase every message to ADDRESS and every open of those messages."""
    from deadpixel.store import maintenance

    if not yes:
        click.confirm(f"Erase all messages to {address} and their opens? This cannot be undone", abort=True)
    with cli.store() as conn:
        erased_messages, erased_opens = maintenance.forget_recipient(conn, address)
    click.echo(f"Erased {erased_messages} message(s) and {erased_opens} open(s) of {address}.")


@click.command()
@pass_cli
def purge(cli: Cli) -> None:
    """Apply DEADPIXEL_RETENTION_DAYS now: drop raw detail (address, user agent, city) of older opens."""
    settings = cli.settings
    if settings.retention_days <= 0:
        click.echo("DEADPIXEL_RETENTION_DAYS is not set: raw detail is kept.")
        return
    from deadpixel.store import maintenance
    from deadpixel.store.clicks import purge_click_detail

    with cli.store() as conn:
        n = maintenance.purge_raw_detail(conn, settings.retention_days)
        n_clicks = purge_click_detail(conn, settings.retention_days)
    click.echo(
        f"Dropped raw detail of {n} open(s) older than {settings.retention_days} days"
        f" and of {n_clicks} click(s)."
    )
