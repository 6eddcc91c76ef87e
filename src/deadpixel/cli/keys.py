"""``deadpixel secret rotate``: the keys that sign pixel and link tokens."""

from __future__ import annotations

import click

from deadpixel.cli.context import Cli, pass_cli


@click.group()
def secret() -> None:
    """The keys that sign pixel and link tokens."""


@secret.command("rotate")
@pass_cli
def secret_rotate(cli: Cli) -> None:
    """Make a new signing key current; pixels signed with older keys keep working."""
    from deadpixel.config import ensure_data_dir
    from deadpixel.security.keys import rotate_keys

    settings = cli.settings
    ensure_data_dir(settings)
    keys = rotate_keys(settings.keys_file)
    click.echo(
        f"Signing key {keys.current_id} is now current ({len(keys.keys)} keys kept in {settings.keys_file})."
    )
    if settings.database_url.startswith(("postgres", "postgresql")):
        click.echo("Copy that file to every other deadpixel server that shares this database.")
