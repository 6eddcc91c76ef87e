"""``deadpixel serve`` and ``deadpixel relay``: the long-running servers."""

from __future__ import annotations

import click

from deadpixel.cli.context import Cli, pass_cli


@click.command()
@click.option("--host", help="Address to listen on (DEADPIXEL_HOST, default 127.0.0.1).")
@click.option("--port", type=int, help="Port to listen on (DEADPIXEL_PORT, default 8000).")
@click.option("--workers", type=int, help="Worker processes (DEADPIXEL_WORKERS, default 1).")
@pass_cli
def serve(cli: Cli, host: str | None, port: int | None, workers: int | None) -> None:
    """Run the pixel server (and everything else the web side offers)."""
    from deadpixel.server.start import serve as run_server

    settings = cli.load(host=host, port=port, workers=workers)
    click.echo(f"deadpixel: data in {settings.data_dir}", err=True)
    click.echo(
        f"deadpixel: listening on http://{settings.host}:{settings.port} "
        f"(pixels point at {settings.base_url}); {settings.workers} worker(s)",
        err=True,
    )
    click.echo(f"deadpixel: dashboard at {settings.base_url}/", err=True)
    if not _has_accounts(cli):
        click.echo("deadpixel: no account yet; create one with: deadpixel user create NAME", err=True)
    run_server(settings)


def _has_accounts(cli: Cli) -> bool:
    from deadpixel.accounts.users import list_users

    with cli.store() as conn:
        return bool(list_users(conn))


@click.command()
@click.option("--host", help="Address to listen on (DEADPIXEL_RELAY_HOST, default 127.0.0.1).")
@click.option("--port", type=int, help="Port to listen on (DEADPIXEL_RELAY_PORT, default 2525).")
@pass_cli
def relay(cli: Cli, host: str | None, port: int | None) -> None:
    """Run the SMTP relay: point your mail client's outgoing server here."""
    from deadpixel.relay.server import run
    from deadpixel.send.smtp_config import smtp_settings
    from deadpixel.server.logs import configure as configure_logs

    settings = cli.load(relay_host=host, relay_port=port)
    configure_logs(settings.log_level, settings.log_format)
    upstream = smtp_settings(settings)
    click.echo(f"deadpixel: data in {settings.data_dir}", err=True)
    click.echo(
        f"deadpixel: relay listening on {settings.relay_host}:{settings.relay_port}, "
        f"passing mail to {upstream.host}:{upstream.port}",
        err=True,
    )
    run(settings, upstream, host=settings.relay_host, port=settings.relay_port)
