"""``deadpixel export``: opens, clicks or recipients as CSV, streamed."""

from __future__ import annotations

from pathlib import Path

import click

from deadpixel.cli.context import Cli, pass_cli
from deadpixel.reports import exports


@click.command("export")
@click.argument("kind", type=click.Choice(exports.KINDS))
@click.option("--campaign", help="Only this campaign.")
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="File to write (default: stdout)."
)
@pass_cli
def export_command(cli: Cli, kind: str, campaign: str | None, output: Path | None) -> None:
    """Export opens, clicks or per-recipient status as CSV, oldest first, streamed (see docs/exports.md)."""
    with cli.store() as conn:
        exports.query(conn, kind, campaign)  # an unknown campaign stops here, before any file is written
    with cli.engine() as engine, click.open_file(str(output) if output else "-", "wb") as out:
        for chunk in exports.stream(engine, kind, campaign):
            out.write(chunk)
