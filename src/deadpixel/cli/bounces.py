"""``deadpixel bounces listen``, ``fetch`` and ``reclassify``; the mail and IMAP code loads only here."""

from __future__ import annotations

import click

from deadpixel.cli.context import Cli, json_option, pass_cli, print_json
from deadpixel.server.logs import configure as configure_logs


@click.group("bounces")
def bounces() -> None:
    """Learn which messages bounced and who complained; suppress those addresses (see docs/bounces.md)."""


@bounces.command("listen")
@click.option("--host", help="Address to listen on (DEADPIXEL_BOUNCE_HOST, default 127.0.0.1).")
@click.option("--port", type=int, help="Port to listen on (DEADPIXEL_BOUNCE_PORT, default 2526).")
@pass_cli
def listen(cli: Cli, host: str | None, port: int | None) -> None:
    """Run the SMTP server that bounces to DEADPIXEL_BOUNCE_DOMAIN come back to."""
    from deadpixel.bounces.listener import run

    settings = cli.load(bounce_host=host, bounce_port=port)
    if settings.bounce_domain is None:
        from deadpixel.config import ConfigError

        raise ConfigError("bounce_domain", "is not set: which domain's bounce addresses should be taken?")
    configure_logs(settings.log_level, settings.log_format)
    click.echo(f"deadpixel: data in {settings.data_dir}", err=True)
    where = f"{settings.bounce_host}:{settings.bounce_port}"
    click.echo(f"deadpixel: taking bounces for {settings.bounce_domain} on {where}", err=True)
    run(settings, host=settings.bounce_host, port=settings.bounce_port)


@bounces.command("reclassify")
@click.option("--dry-run", is_flag=True, help="Say what would change; change nothing.")
@json_option
@pass_cli
def reclassify(cli: Cli, dry_run: bool, as_json: bool) -> None:
    """Work out every stored bounce's reason again; lift the suppressions bounces no longer justify."""
    from deadpixel.bounces.reclassify import reclassify as rerun
    from deadpixel.store.migrate import ensure_current

    settings = cli.settings
    with cli.engine(writer=True) as engine:
        ensure_current(engine)
        with engine.begin() as conn:
            done = rerun(conn, settings.soft_bounce_limit, dry_run=dry_run)
    if as_json:
        print_json({"dry_run": dry_run, **done.as_json()})
        return
    would = "would be " if dry_run else ""
    click.echo(f"{done.reports} bounce report(s) read, {done.changed} {would}given a different reason")
    for reason, n in done.by_reason.most_common():
        click.echo(f"  {reason:<24} {n}")
    verb = "would be lifted" if dry_run else "lifted"
    click.echo(f"{len(done.lifted)} suppression(s) {verb}, {done.kept} added by bounces kept")
    for lifted in done.lifted:
        click.echo(f"  {lifted.address}  ({lifted.source}): {lifted.why}")


@bounces.command("fetch")
@pass_cli
def fetch(cli: Cli) -> None:
    """Read the bounce mailbox (DEADPIXEL_BOUNCE_IMAP_*) once: record, then mark or move what was read."""
    from deadpixel.bounces.fetch import fetch as fetch_mailbox
    from deadpixel.bounces.listener import processor
    from deadpixel.store.migrate import ensure_current

    settings = cli.settings
    configure_logs(settings.log_level, settings.log_format)
    with cli.engine(writer=True) as engine:
        ensure_current(engine)
        summary = fetch_mailbox(settings, processor(settings, engine))
    click.echo(
        f"{summary.read} message(s) read: {summary.recorded} recorded, {summary.ignored} ignored"
        " (not a bounce or complaint about a message of ours; see the log)"
    )


@bounces.command("parse")
@click.argument("files", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON array, an object per file.")
def parse_files(files: tuple[str, ...], as_json: bool) -> None:
    """Say what deadpixel reads from each message FILE ('-' for standard input), recording nothing.

    One line per recipient: file, kind, address, status, reason, and whether deadpixel would suppress the
    address. Needs no settings, bounce domain or database. A file that cannot be read, or is larger than
    10 MiB (what the listener takes by default), gets a line on standard error and the kind "malformed";
    the exit status is 0 either way.
    """
    import json
    import logging

    from deadpixel.bounces.describe import lines, read_file

    logging.getLogger("deadpixel.bounces").setLevel(logging.ERROR)  # a reader's hiccup: the output says it
    entries = []
    for name in files:
        entry, error = read_file(name)
        if error is not None:
            click.echo(f"deadpixel: {name}: {error}", err=True)
        entries.append(entry)
    if as_json:
        click.echo(json.dumps(entries, indent=2, ensure_ascii=False))
        return
    for entry in entries:
        for line in lines(entry):
            click.echo(line)
