"""``deadpixel doctor``: kept thin and light; the CLI loads it only when the command runs."""

from __future__ import annotations

import sys

import click

from deadpixel.cli.context import Cli, pass_cli


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print every check as JSON for scripts.")
@click.option(
    "--timeout",
    type=click.FloatRange(0.1, 120),
    default=5.0,
    show_default=True,
    help="Seconds per network step.",
)
@pass_cli
def doctor(cli: Cli, as_json: bool, timeout: float) -> None:
    """Check this deployment and say what is wrong and how to fix it (exit status 1 when a check fails)."""
    from deadpixel.config import ConfigError
    from deadpixel.doctor import output
    from deadpixel.doctor.result import Result

    try:
        settings = cli.settings
    except ConfigError as exc:
        results = [Result("settings", "fail", f"bad setting: {exc}", "fix the setting named above")]
    else:
        from deadpixel.doctor.runner import run_checks

        results = run_checks(settings, timeout=timeout)
    if as_json:
        click.echo(output.as_json(results))
    else:
        click.echo(output.as_text(results, colour=sys.stdout.isatty()))
    if any(result.status == "fail" for result in results):
        sys.exit(1)
