"""``deadpixel db upgrade|current`` and ``deadpixel backup``: the store itself."""

from __future__ import annotations

from pathlib import Path

import click

from deadpixel.cli.context import Cli, pass_cli


@click.group()
def db() -> None:
    """The database schema."""


@db.command("upgrade")
@pass_cli
def db_upgrade(cli: Cli) -> None:
    """Migrate the store to the current schema (every command also does this on first use)."""
    from deadpixel.store.migrate import current_revision, upgrade

    with cli.engine() as engine:
        before = current_revision(engine)
        upgrade(engine)
        after = current_revision(engine)
    if before == after:
        click.echo(f"Schema already current (revision {after}).")
    else:
        click.echo(f"Schema migrated from {before or 'empty'} to {after}.")


@db.command("current")
@pass_cli
def db_current(cli: Cli) -> None:
    """Show the schema revision of the store and the newest one this version knows."""
    from deadpixel.store.migrate import current_revision, head_revision

    with cli.engine() as engine:
        click.echo(f"store: {current_revision(engine) or 'empty'}; newest: {head_revision()}")


@click.command("backup")
@click.argument("into", type=click.Path(file_okay=False, path_type=Path))
@pass_cli
def backup_command(cli: Cli, into: Path) -> None:
    """Copy the store and the signing keys into a new directory under INTO, while the server runs."""
    from deadpixel.store.backup import backup

    settings = cli.settings
    made = backup(settings, into)
    click.echo(f"Backup written to {made.directory}")
    if made.database is None:
        click.echo(
            "The store is PostgreSQL: the backup holds the signing keys; back the database up with pg_dump"
            " (see docs/deploy.md)."
        )
