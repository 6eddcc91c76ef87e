"""The sending commands: ``deadpixel send`` and ``deadpixel campaign send``.

Kept apart from ``deadpixel.cli`` so that commands which never send mail do not import the mail stack.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from deadpixel.cli.context import Cli, json_option, pass_cli, print_json, recipient_address
from deadpixel.config import ensure_data_dir

if TYPE_CHECKING:
    from deadpixel.mail.addresses import Recipient


def read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise click.ClickException(
            f"{what} {path} is not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    except OSError as exc:
        raise click.ClickException(f"cannot read {what} {path}: {exc.strerror}") from None


FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


RETRIES = click.option(
    "--retries",
    type=click.IntRange(0, 20),
    default=3,
    show_default=True,
    help="Retries of temporary SMTP failures (4xx, dropped connection), with doubling backoff.",
)


@click.command("send")
@click.option("--to", "to", required=True, help="Recipient's address ('Name <addr>' works too).")
@click.option("--cc", multiple=True, help="A copy to this address; repeat for more.")
@click.option("--from", "sender", help="Sender (default DEADPIXEL_MAIL_FROM).")
@click.option("--subject", required=True)
@click.option("--html", "html_file", required=True, type=FILE, help="The HTML body (UTF-8).")
@click.option("--text", "text_file", type=FILE, help="The plain-text body; derived from the HTML if omitted.")
@click.option("--campaign", help="Campaign to group the message under in reports (created if new).")
@click.option(
    "--no-track", is_flag=True, help="Send the HTML untouched: no pixel, no link tracking, no record."
)
@click.option(
    "--dry-run",
    "dry_run",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write the message to this .eml file instead of sending it (kept as a draft, not counted).",
)
@RETRIES
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@pass_cli
def send(
    cli: Cli,
    to: str,
    cc: tuple[str, ...],
    sender: str | None,
    subject: str,
    html_file: Path,
    text_file: Path | None,
    campaign: str | None,
    no_track: bool,
    dry_run: Path | None,
    retries: int,
    as_json: bool,
) -> None:
    """Send one tracked message through your SMTP server (DEADPIXEL_SMTP_*)."""
    from deadpixel.send.single import Outgoing, SendFailed, send_one
    from deadpixel.send.smtp_config import sender_address, smtp_settings

    settings = cli.settings
    smtp = None if dry_run is not None else smtp_settings(settings)
    mail = Outgoing(
        sender=sender_address(settings, sender),
        to=to,
        cc=cc,
        subject=subject,
        html=read_text(html_file, "HTML file"),
        text=read_text(text_file, "text file") if text_file else None,
        campaign=campaign,
        track=not no_track,
    )
    with cli.migrated() as engine:
        try:
            result = send_one(settings, engine, mail, smtp=smtp, dry_run=dry_run, retries=retries)
        except ValueError as exc:  # an address or header compose() refuses: nothing was stored
            raise click.ClickException(f"not sent: {exc}") from None
        except SendFailed as failed:
            what = f" (message {failed.result.message_id} marked failed)" if failed.result.message_id else ""
            raise click.ClickException(f"not sent to {to}: {failed.result.error}{what}") from None
    summary = {
        "message_id": result.message_id,
        "to": to,
        "status": result.status,
        "tracked_links": result.links,
        "refused": result.refused,
        "eml": str(dry_run) if dry_run else None,
    }
    if as_json:
        print_json(summary)
        return
    what = f"message {result.message_id}" if result.message_id else "untracked message"
    if dry_run is not None:
        click.echo(f"Wrote {what} to {dry_run} (not sent; a draft does not count in reports).")
    else:
        click.echo(f"Sent {what} to {to} ({result.links} tracked links).")
    for rcpt, reply in result.refused.items():
        click.echo(f"Warning: the server refused {rcpt}: {reply}", err=True)


class _PlainReporter:
    """Lines for logs and pipes: every problem as it happens, and the count every few seconds."""

    def __init__(self, total: int, collect: list[dict[str, Any]] | None, quiet: bool) -> None:
        import time

        self._total, self._done, self._clock = total, 0, time.monotonic
        self._last = self._clock()
        self._collect = collect
        self._quiet = quiet

    def problem(self, problem: Any) -> None:
        if self._collect is not None:
            self._collect.append(
                {"line": problem.line, "value": problem.value, "reason": problem.reason, "kind": problem.kind}
            )
        if not self._quiet:
            click.echo(f"line {problem.line}: {problem.value!r}: {problem.reason}", err=True)

    def advance(self, rows: int) -> None:
        self._done += rows
        if not self._quiet and self._clock() - self._last >= 5:
            self._last = self._clock()
            click.echo(f"progress: {self._done}/{self._total} rows", err=True)


class _BarReporter(_PlainReporter):
    """On a terminal: a progress bar with counts and an ETA; problems scroll above it."""

    def __init__(self, bar: Any, total: int, collect: list[dict[str, Any]] | None) -> None:
        super().__init__(total, collect, quiet=False)
        self._bar = bar

    def problem(self, problem: Any) -> None:
        click.echo("\r\033[K", nl=False, err=True)
        super().problem(problem)

    def advance(self, rows: int) -> None:
        self._bar.update(rows)


@click.group("campaign")
def campaign() -> None:
    """Mail merges to a list: personalised, tracked, resumable."""


@campaign.command("send")
@click.argument("name")
@click.option("--recipients", "recipients_file", type=FILE,
              help="CSV with an 'email' column; other columns are template variables.")  # fmt: skip
@click.option("--to-tag", help="Instead of --recipients: the subscribed contacts with this tag.")
@click.option("--subject", required=True, help="Subject template, e.g. 'Hi {{ first_name }}'.")
@click.option("--html", "html_file", required=True, type=FILE, help="HTML template (Jinja2, UTF-8).")
@click.option("--text", "text_file", type=FILE, help="Plain-text template; derived from the HTML if omitted.")
@click.option("--from", "sender", help="Sender (default DEADPIXEL_MAIL_FROM).")
@click.option(
    "--rate", default="off", show_default=True, help="Most messages per second, e.g. 10/s or 600/m."
)
@click.option("--concurrency", type=click.IntRange(1, 32), default=4, show_default=True,
              help="SMTP connections used at once.")  # fmt: skip
@RETRIES
@click.option("--retry-backoff", type=click.FloatRange(0, 3600), default=1.0, show_default=True,
              help="Seconds before the first retry; doubled for each next one.")  # fmt: skip
@click.option(
    "--retry-uncertain",
    is_flag=True,
    help="Also send to recipients an earlier run may have reached (the connection broke after sending).",
)
@click.option(
    "--notify/--no-notify",
    default=None,
    help="Tell me when each recipient first reads it (see docs/notifications.md); kept for re-runs.",
)
@click.option(
    "--digest", is_flag=True, help="With --notify: one daily summary of who read, not a notice each."
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary and every problem as JSON.")
@pass_cli
def campaign_send(
    cli: Cli,
    name: str,
    recipients_file: Path | None,
    to_tag: str | None,
    subject: str,
    html_file: Path,
    text_file: Path | None,
    sender: str | None,
    rate: str,
    concurrency: int,
    retries: int,
    retry_backoff: float,
    retry_uncertain: bool,
    notify: bool | None,
    digest: bool,
    as_json: bool,
) -> None:
    """Send the campaign NAME to every row of the recipient list; run it again to finish an interrupted run.

    Recipients already sent to are skipped, so a re-run after Ctrl-C, a crash or SMTP trouble sends only
    what was not sent. Problems are reported per row (line, value, reason) without stopping the rest; the
    exit status is 1 when any row was not sent.
    """
    import sys
    from dataclasses import asdict

    from deadpixel.security.keys import load_or_create_keys
    from deadpixel.security.tokens import TokenSigner
    from deadpixel.send.campaign import CampaignRunner, CampaignSpec, summary_lines
    from deadpixel.send.merge import Templates
    from deadpixel.send.ratelimit import parse_rate
    from deadpixel.send.recipients import RecipientList, Recipients
    from deadpixel.send.smtp_config import sender_address, smtp_settings
    from deadpixel.send.tag_recipients import TagRecipients
    from deadpixel.send.tracked import Tracker
    from deadpixel.send.unsubscribe import https_warning, unsubscribe_extras
    from deadpixel.store import audit
    from deadpixel.store.suppressions import suppressed

    try:
        per_second = parse_rate(rate)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--rate") from None
    settings = cli.settings
    smtp = smtp_settings(settings)
    from_address = sender_address(settings, sender)
    templates = Templates(
        subject,
        read_text(html_file, "HTML template"),
        read_text(text_file, "text template") if text_file else None,
    )
    if (recipients_file is None) == (to_tag is None):
        raise click.UsageError("give either --recipients FILE or --to-tag TAG")
    recipients: Recipients
    if recipients_file is not None:
        recipients = RecipientList(recipients_file)
    else:
        with cli.migrated() as engine:
            recipients = TagRecipients(engine, str(to_tag))
    ensure_data_dir(settings)  # a first command on a new machine creates the keys there
    signer = TokenSigner(load_or_create_keys(settings.keys_file))
    spec = CampaignSpec(
        name=name, sender=from_address, templates=templates, rate=per_second, concurrency=concurrency,
        retries=retries, backoff=retry_backoff, retry_uncertain=retry_uncertain,
        extras=functools.partial(unsubscribe_extras, settings, signer), suppressed=suppressed,
        notify=notify_mode(notify, digest),
    )  # fmt: skip
    warning = https_warning(settings)
    if warning:
        click.echo(warning, err=True)
    total = recipients.count()
    problems: list[dict[str, Any]] | None = [] if as_json else None
    with cli.migrated() as engine:
        with engine.begin() as conn:  # before the first message goes: an interrupted send is audited too
            audit.record(conn, audit.CLI, "campaign.send", f"{name} ({total} rows)")
        tracker = Tracker(settings, signer)
        if sys.stderr.isatty() and not as_json:
            with click.progressbar(
                length=total, label=f"Sending {name}", file=sys.stderr, show_pos=True
            ) as bar:
                runner = CampaignRunner(
                    settings, engine, smtp, spec, tracker, _BarReporter(bar, total, problems)
                )
                summary = runner.run(recipients)
        else:
            reporter = _PlainReporter(total, problems, quiet=as_json)
            summary = CampaignRunner(settings, engine, smtp, spec, tracker, reporter).run(recipients)
    if as_json:
        print_json({"campaign": name, **asdict(summary), "ok": summary.ok, "problems": problems})
    else:
        for line in summary_lines(name, summary):
            click.echo(line)
    if not summary.ok:
        sys.exit(1)


@click.group("suppression")
def suppression() -> None:
    """The suppression list: addresses that unsubscribed, bounced or complained; campaign sends and the relay
    skip them."""


@suppression.command("list")
@json_option
@pass_cli
def suppression_list(cli: Cli, as_json: bool) -> None:
    """Show every suppressed address, oldest first, with how and from which campaign it left."""
    from deadpixel.reports.analytics import iso
    from deadpixel.store.suppressions import list_suppressions

    with cli.migrated() as engine, engine.connect() as conn:
        rows = [{**row, "created_at": iso(row["created_at"])} for row in list_suppressions(conn)]
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo("Nobody has unsubscribed.")
    for row in rows:
        click.echo(
            f"{row['created_at']}  {row['address']:<40}  {row['source']:<16}  {row['campaign'] or '-'}"
        )


def _address_command(name: str) -> Callable[[Callable[[Cli, Recipient], None]], click.Command]:
    """A ``suppression NAME ADDRESS`` command; ADDRESS is checked as every way in checks an address."""

    def register(change: Callable[[Cli, Recipient], None]) -> click.Command:
        with_address = click.argument("address", callback=recipient_address)(pass_cli(change))
        return suppression.command(name)(with_address)

    return register


@_address_command("add")
def suppression_add(cli: Cli, address: Recipient) -> None:
    """Stop all campaign mail to ADDRESS (as if they had unsubscribed)."""
    from deadpixel.store import audit
    from deadpixel.store.suppressions import suppress

    with cli.store() as conn:
        added = suppress(conn, address.key, "cli")
        if added:
            audit.record(conn, audit.CLI, "suppression.add", audit.masked(address.key))
    click.echo(f"{address.key} {'added to' if added else 'was already on'} the suppression list.")


@_address_command("remove")
def suppression_remove(cli: Cli, address: Recipient) -> None:
    """Allow campaign mail to ADDRESS again (only when they asked for it)."""
    from deadpixel.store import audit
    from deadpixel.store.suppressions import unsuppress

    with cli.store() as conn:
        removed = unsuppress(conn, address.key)
        if removed:
            audit.record(conn, audit.CLI, "suppression.remove", audit.masked(address.key))
    click.echo(f"{address.key} {'removed from' if removed else 'is not on'} the suppression list.")


def notify_mode(notify: bool | None, digest: bool) -> int | None:
    """``--notify``, ``--no-notify``, ``--digest`` as a read-notice mode; None: keep the campaign's."""
    from deadpixel.store import notices

    if digest and notify is False:
        raise click.UsageError("--digest is a kind of --notify; it cannot go with --no-notify")
    if digest:
        return notices.DIGEST
    if notify is None:
        return None
    return notices.EACH if notify else notices.OFF
