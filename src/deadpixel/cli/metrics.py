"""``deadpixel metrics``: the running server's counters, read from the data dir."""

from __future__ import annotations

import click

from deadpixel.cli.context import Cli, json_option, pass_cli, print_json


@click.command()
@json_option
@click.option("--prometheus", is_flag=True, help="Print the Prometheus text format instead.")
@pass_cli
def metrics(cli: Cli, as_json: bool, prometheus: bool) -> None:
    """Counters of the running server's processes, summed (pixel requests, invalid tokens, opens, batches)."""
    from deadpixel.hooks.registry import backlog_gauges
    from deadpixel.server.metrics import node_totals, prometheus_text

    with cli.engine() as engine:
        totals, processes = node_totals(cli.settings.data_dir, backlog_gauges(engine))
    if prometheus:
        click.echo(prometheus_text(totals, processes), nl=False)
        return
    if as_json:
        print_json({"processes": processes, **totals})
        return
    if not processes:
        click.echo(f"No running server publishes metrics in {cli.settings.data_dir}.")
        return
    click.echo(f"{processes} server process(es)")
    for name, value in totals.items():
        click.echo(f"  {name:<24} {value:g}")
