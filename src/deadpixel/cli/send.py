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
    from deadpixel.send.recipients import RowSource


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
@click.option(
    "--utm",
    is_flag=True,
    help="Add utm_source, utm_medium=email and utm_campaign (the --campaign) to tracked links.",
)
@click.option("--utm-source", default=None, help="utm_source for --utm  [default: deadpixel]")
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
    utm: bool,
    utm_source: str | None,
    as_json: bool,
) -> None:
    """Send one tracked message through your SMTP server (DEADPIXEL_SMTP_*)."""
    if utm_source is not None and not utm:
        raise click.UsageError("--utm-source goes with --utm")
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
        utm_source=_utm_source(utm, utm_source),
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


SENDING_OPTIONS = (
    click.option("--rate", default="off", show_default=True,
                 help="Most messages per second, e.g. 10/s or 600/m."),
    click.option("--concurrency", type=click.IntRange(1, 32), default=4, show_default=True,
                 help="SMTP connections used at once."),
    RETRIES,
    click.option("--retry-backoff", type=click.FloatRange(0, 3600), default=1.0, show_default=True,
                 help="Seconds before the first retry; doubled for each next one."),
    click.option("--retry-uncertain", is_flag=True,
                 help="Also send to recipients an earlier run may have reached (the connection broke after"
                 " sending)."),
)  # fmt: skip


def sending_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """How a run sends (rate, connections, retries): the same for a campaign and for its winner's send."""
    for option in reversed(SENDING_OPTIONS):
        func = option(func)
    return func


@campaign.command("send")
@click.argument("name")
@click.option("--recipients", "recipients_file", type=FILE,
              help="CSV with an 'email' column; other columns are template variables.")  # fmt: skip
@click.option(
    "--to-tag", help="Or send to the subscribed contacts with this tag (their fields as variables)."
)
@click.option("--segment", help="Or send to a segment: CAMPAIGN:WHO, @AUDIENCE[:VALUE] or a saved segment's "
              "name, as of now (docs/segments.md); its only template variable is email.")  # fmt: skip
@click.option(
    "--subject",
    "subjects",
    required=True,
    multiple=True,
    help="Subject template, e.g. 'Hi {{ first_name }}'; give it twice or more for an A/B test.",
)
@click.option(
    "--html",
    "html_files",
    required=True,
    type=FILE,
    multiple=True,
    help="HTML template (Jinja2, UTF-8); one per variant, or one for all.",
)
@click.option("--text", "text_file", type=FILE, help="Plain-text template; derived from the HTML if omitted.")
@click.option("--from", "sender", help="Sender (default DEADPIXEL_MAIL_FROM).")
@sending_options
@click.option(
    "--notify/--no-notify",
    default=None,
    help="Tell me when each recipient first reads it (see docs/notifications.md); kept for re-runs.",
)
@click.option(
    "--digest", is_flag=True, help="With --notify: one daily summary of who read, not a notice each."
)
@click.option("--test-share", type=click.FloatRange(0, 1, min_open=True),
              help="A/B test: the share of the list that gets the variants now, split evenly at random; the"
              " rest waits for the winner (`campaign winner`).")  # fmt: skip
@click.option(
    "--pick-winner-after",
    "pick_after",
    help="A/B test: when the winner is to go to the rest, e.g. 4h (stored with the test).",
)
@click.option(
    "--by",
    "metric",
    type=click.Choice(["human-open-rate", "click-rate"]),
    default=None,
    help="A/B test: what makes a winner  [default: human-open-rate]",
)
@click.option("--utm", is_flag=True,
              help="Add utm_source, utm_medium=email and utm_campaign=NAME to tracked links (never replacing"
              " a parameter a link has).")  # fmt: skip
@click.option("--utm-source", default=None, help="utm_source for --utm  [default: deadpixel]")
@click.option(
    "--at",
    "at",
    metavar="TIME",
    help="Store the campaign and let the server send it then: 2026-12-07 09:00 (local) or ISO 8601.",
)
@click.option(
    "--after",
    "after",
    metavar="DURATION",
    help="Store the campaign and let the server send it after 90m, 4h, 2d, 1h30m...",
)
@click.option(
    "--at-best-time",
    "best_time",
    is_flag=True,
    help="Store the campaign and let the server send each message within 24 h at its recipient's usual"
    " reading hour (the audience's best hour for recipients without history).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary and every problem as JSON.")
@pass_cli
def campaign_send(
    cli: Cli,
    /,
    name: str,
    recipients_file: Path | None,
    to_tag: str | None,
    segment: str | None,
    subjects: tuple[str, ...],
    html_files: tuple[Path, ...],
    text_file: Path | None,
    sender: str | None,
    notify: bool | None,
    digest: bool,
    test_share: float | None,
    pick_after: str | None,
    metric: str | None,
    utm: bool,
    utm_source: str | None,
    at: str | None,
    after: str | None,
    best_time: bool,
    as_json: bool,
    **sending: Any,
) -> None:
    """Send the campaign NAME to every row of the recipient list; run it again to finish an interrupted run.

    Recipients already sent to are skipped, so a re-run after Ctrl-C, a crash or SMTP trouble sends only
    what was not sent. Problems are reported per row (line, value, reason) without stopping the rest; the
    exit status is 1 when any row was not sent.

    With two or more --subject (or --html) and --test-share, the campaign is an A/B test: that share of the
    list gets the variants (A, B, ...) now, evenly and at random; the rest waits for the winner, sent by
    `deadpixel campaign winner NAME --now`. See docs/abtests.md.

    With --at or --after the campaign is stored instead and the server (deadpixel serve) sends it then (a
    --segment is evaluated then, not now); with --at-best-time each message goes at its recipient's usual
    hour within 24 h. See campaign status, pause, resume and cancel.
    """
    from deadpixel.send.merge import Templates

    variants = _variants(subjects, html_files)
    testing = len(variants) > 1
    if testing and test_share is None:
        raise click.UsageError("an A/B test (two or more --subject or --html) needs --test-share, e.g. 0.2")
    if not testing and (test_share is not None or pick_after or metric):
        raise click.UsageError("--test-share, --pick-winner-after and --by need two or more variants")
    if utm_source is not None and not utm:
        raise click.UsageError("--utm-source goes with --utm")
    text = read_text(text_file, "text template") if text_file else None
    sources = {
        label: (subject, read_text(html, "HTML template")) for label, (subject, html) in variants.items()
    }
    # Compiled now, so a template that does not compile stops the command before anything is stored or sent.
    templates = {label: Templates(subject, html, text) for label, (subject, html) in sources.items()}
    recipients = recipient_source(cli, recipients_file, to_tag, segment)
    source = _utm_source(utm, utm_source)
    run = _Run(cli, name, sender, as_json, sending, source)
    later = at is not None or after is not None
    if best_time and later:
        raise click.UsageError("--at-best-time picks each message's time itself: leave out --at/--after")
    if (later or best_time) and testing:
        raise click.UsageError(
            "--at/--after/--at-best-time do not take an A/B test yet: send the test share now and let the"
            " server send the winner with --pick-winner-after"
        )
    if later or best_time:
        from deadpixel.cli.campaigns import schedule_stored
        from deadpixel.store.campaign_jobs import Content

        [(subject, html)] = sources.values()
        content = Content(
            sender=run.from_address(), subject=subject, html=html, text=text,
            options={"rate": run.rate, "concurrency": sending["concurrency"], "retries": sending["retries"],
                     "backoff": sending["retry_backoff"], "retry_uncertain": sending["retry_uncertain"],
                     "notify": notify_mode(notify, digest), "utm_source": source,
                     "segment": segment if later else None},
        )  # fmt: skip
        schedule_stored(cli, name, content, recipients, at, after, as_json, best_time=best_time)
        return
    if not testing:
        [only] = templates.values()
        run.send(recipients, recipients.count(), templates=only, notify=notify_mode(notify, digest))
        return
    assert test_share is not None
    _send_test(run, recipients, sources, text, test_share, pick_after, metric, notify_mode(notify, digest))


def recipient_source(
    cli: Cli, recipients_file: Path | None, to_tag: str | None, segment: str | None
) -> RowSource:
    """The campaign's recipients: the CSV file, the contacts with a tag, or the segment's addresses as of
    now; exactly one of them."""
    from deadpixel.send.recipients import RecipientList

    if sum(given is not None for given in (recipients_file, to_tag, segment)) != 1:
        raise click.UsageError("give one of --recipients FILE, --to-tag TAG or --segment SEGMENT")
    if recipients_file is not None:
        return RecipientList(recipients_file)
    with cli.migrated() as engine:
        if to_tag is not None:
            from deadpixel.send.tag_recipients import TagRecipients

            return TagRecipients(engine, to_tag)
        from deadpixel.send.segment_rows import SegmentRecipients

        return SegmentRecipients(engine, segment or "")


def _utm_source(utm: bool, given: str | None) -> str | None:
    from deadpixel.mail.utm import DEFAULT_SOURCE

    if not utm:
        return None
    source = (given if given is not None else DEFAULT_SOURCE).strip()
    if not source or len(source) > 64 or any(ord(c) < 32 for c in source):
        raise click.BadParameter("1 to 64 printable characters", param_hint="--utm-source")
    return source


def _variants(subjects: tuple[str, ...], html_files: tuple[Path, ...]) -> dict[str, tuple[str, Path]]:
    """Each variant's (subject, HTML file) by label: as many variants as the longer of the two options,
    the other given once (shared) or as many times."""
    from deadpixel.send.abtest import LABELS

    count = max(len(subjects), len(html_files))
    if count > len(LABELS):
        raise click.UsageError(f"at most {len(LABELS)} variants")
    for option, given in (("--subject", subjects), ("--html", html_files)):
        if len(given) not in (1, count):
            raise click.UsageError(f"{option} is given {len(given)} times: give it once or {count} times")

    def nth(i: int) -> tuple[str, Path]:
        return subjects[i if len(subjects) > 1 else 0], html_files[i if len(html_files) > 1 else 0]

    return {LABELS[i]: nth(i) for i in range(count)}


def _send_test(
    run: _Run,
    recipients: Any,
    sources: dict[str, tuple[str, str]],
    text: str | None,
    share: float,
    pick_after: str | None,
    metric: str | None,
    notify: int | None,
) -> None:
    """Store the test (or find the one a first run stored), keep the rest, send the test share."""
    import time

    from deadpixel.reports.abtest import DEFAULT_METRIC
    from deadpixel.security.tokens import new_message_id
    from deadpixel.send.abtest import Split, parse_duration
    from deadpixel.send.merge import Templates
    from deadpixel.store import abtests
    from deadpixel.store.messages import campaign_id

    try:
        after = parse_duration(pick_after) if pick_after else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--pick-winner-after") from None
    with run.cli.migrated() as engine:
        with engine.begin() as conn:
            cid = campaign_id(conn, run.name, create=True)
            assert cid is not None
            wanted = abtests.AbTest(
                cid, metric or DEFAULT_METRIC, share, new_message_id(), run.from_address(), text,
                tuple(abtests.VariantTemplates(label, *source) for label, source in sources.items()),
                run.utm_source, after, time.time() + after if after else None,
            )  # fmt: skip
            test = abtests.create(conn, wanted)
        if _differs(test, wanted):
            click.echo(f"Campaign {run.name!r} is already an A/B test: its first run's variants, share and"
                       " schedule stand.", err=True)  # fmt: skip
        parts = Split.of(recipients, [v.label for v in test.variants], test.test_share, test.seed)
        waiting = parts.hold_rest(engine, cid)
    variants = {v.label: Templates(v.subject, v.html, test.text_template) for v in test.variants}
    if not run.as_json:
        sizes = ", ".join(f"{label} {list(parts.assigned.values()).count(label)}" for label in variants)
        click.echo(f"A/B test: {len(parts.assigned)} recipients get the variants now ({sizes});"
                   f" {waiting} wait for the winner.", err=True)  # fmt: skip
    run.send(
        parts.test_share(), parts.test_share().count(), templates=next(iter(variants.values())),
        notify=notify, variant_of=parts.variant_of, variants=variants, extra={"waiting": waiting},
    )  # fmt: skip


def _differs(test: Any, wanted: Any) -> bool:
    """Whether a re-run asked for another test than the one stored (which stands)."""
    asked = (wanted.test_share, wanted.metric, wanted.variants, wanted.pick_after)
    return (test.test_share, test.metric, test.variants, test.pick_after) != asked


class _Run:
    """One run of the campaign runner from the command line: settings, SMTP, the tracker, progress and
    the summary, shared by a campaign's send and its winner's send."""

    def __init__(
        self, cli: Cli, name: str, sender: str | None, as_json: bool, sending: dict[str, Any],
        utm_source: str | None,
    ) -> None:  # fmt: skip
        from deadpixel.send.ratelimit import parse_rate

        try:
            self.rate = parse_rate(sending["rate"])
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--rate") from None
        self.cli, self.name, self.sender, self.as_json = cli, name, sender, as_json
        self.sending = sending
        self.utm_source = utm_source

    def from_address(self) -> str:
        from deadpixel.send.smtp_config import sender_address

        return sender_address(self.cli.settings, self.sender)

    def send(self, recipients: Any, total: int, *, templates: Any, notify: int | None, **more: Any) -> None:
        import sys
        from dataclasses import asdict

        from deadpixel.mail.utm import Utm
        from deadpixel.security.keys import load_or_create_keys
        from deadpixel.security.tokens import TokenSigner
        from deadpixel.send.campaign import CampaignRunner, CampaignSpec, summary_lines
        from deadpixel.send.smtp_config import smtp_settings
        from deadpixel.send.tracked import Tracker
        from deadpixel.send.unsubscribe import https_warning, unsubscribe_extras
        from deadpixel.store import audit
        from deadpixel.store.suppressions import suppressed

        settings = self.cli.settings
        smtp = smtp_settings(settings)
        extra = more.pop("extra", {})
        ensure_data_dir(settings)  # a first command on a new machine creates the keys there
        signer = TokenSigner(load_or_create_keys(settings.keys_file))
        s = self.sending
        spec = CampaignSpec(
            name=self.name, sender=self.from_address(), templates=templates, rate=self.rate,
            concurrency=s["concurrency"], retries=s["retries"], backoff=s["retry_backoff"],
            retry_uncertain=s["retry_uncertain"], suppressed=suppressed, notify=notify,
            extras=functools.partial(unsubscribe_extras, settings, signer), **more,
        )  # fmt: skip
        warning = https_warning(settings)
        if warning:
            click.echo(warning, err=True)
        problems: list[dict[str, Any]] | None = [] if self.as_json else None
        utm = Utm(self.name, self.utm_source) if self.utm_source else None
        with self.cli.migrated() as engine:
            with engine.begin() as conn:  # before the first message goes: an interrupted send is audited too
                audit.record(conn, audit.CLI, "campaign.send", f"{self.name} ({total} rows)")
            tracker = Tracker(settings, signer, utm)
            if sys.stderr.isatty() and not self.as_json:
                with click.progressbar(
                    length=total, label=f"Sending {self.name}", file=sys.stderr, show_pos=True
                ) as bar:
                    runner = CampaignRunner(
                        settings, engine, smtp, spec, tracker, _BarReporter(bar, total, problems)
                    )
                    summary = runner.run(recipients)
            else:
                reporter = _PlainReporter(total, problems, quiet=self.as_json)
                summary = CampaignRunner(settings, engine, smtp, spec, tracker, reporter).run(recipients)
        if self.as_json:
            print_json(
                {"campaign": self.name, **asdict(summary), **extra, "ok": summary.ok, "problems": problems}
            )
        else:
            for line in summary_lines(self.name, summary):
                click.echo(line)
        if not summary.ok:
            sys.exit(1)


@campaign.command("winner")
@click.argument("name")
@click.option(
    "--now",
    is_flag=True,
    help="Send the leader to the recipients still waiting, if it is at least 95% likely to be better.",
)
@click.option(
    "--by",
    "metric",
    type=click.Choice(["human-open-rate", "click-rate"]),
    default=None,
    help="Judge by this instead of the test's own metric.",
)
@sending_options
@click.option("--json", "as_json", is_flag=True, help="Print the standing (and the send's summary) as JSON.")
@pass_cli
def campaign_winner(
    cli: Cli, /, name: str, now: bool, metric: str | None, as_json: bool, **sending: Any
) -> None:
    """Show how the variants of the A/B test NAME stand; with --now, send the winner to the rest.

    The winner is chosen once: a later --now (after an interruption) finishes sending that one. When no
    variant is 95% likely to be better yet, --now says why and sends nothing (exit status 0).
    """
    from deadpixel.reports.analytics import UnknownCampaign
    from deadpixel.send.abtest import WaitingList
    from deadpixel.send.merge import Templates
    from deadpixel.send.winner import decide

    with cli.store() as conn:
        try:
            decision = decide(conn, name, metric, choose=now)
        except UnknownCampaign:
            raise click.ClickException(f"no campaign named {name!r}") from None
        if decision is None:
            raise click.ClickException(f"campaign {name!r} is not an A/B test (send it with --test-share)")
    found, test, winner = decision.standing, decision.test, decision.winner
    cid = test.campaign_id
    if not now or winner is None:
        if as_json:
            print_json({**found, "sending": None, "why_not": None if not now else found["statement"]})
        else:
            _print_standing(name, found)
            if now:
                click.echo(f"Not sent: no winner yet ({found['statement']}). Run it again later.")
        return
    if not as_json:
        _print_standing(name, found)
        click.echo(f"Sending {winner} to the {found['waiting']} recipients waiting.")
    chosen = next(v for v in test.variants if v.label == winner)
    from deadpixel.store.db import create_engine

    run = _Run(cli, name, test.sender, as_json, sending, test.utm_source)
    reader = create_engine(cli.settings.database_url)  # reads the waiting recipients page by page
    try:
        run.send(
            WaitingList(reader, cid), found["waiting"], notify=None,
            templates=Templates(chosen.subject, chosen.html, test.text_template),
            extra={"winner": winner, "standing": found},
        )  # fmt: skip
    finally:
        reader.dispose()


def _print_standing(name: str, found: dict[str, Any]) -> None:
    by = "human open rate" if found["metric"] == "human-open-rate" else "click rate"
    click.echo(f"A/B test {name!r}, by {by} (test share {found['test_share']:.0%}):")
    click.echo(
        f"  {'variant':<8}{'sent':>8}{'human opens':>13}{'clicks':>8}{'open rate':>11}{'click rate':>12}"
        "  subject"
    )
    for v in found["variants"]:
        click.echo(
            f"  {v['label']:<8}{v['sent']:>8}{v['human_opens']:>13}{v['clicks']:>8}"
            f"{v['human_open_rate']:>11.1%}{v['click_rate']:>12.1%}  {v['subject']}"
        )
    click.echo(f"  {found['statement']}")
    if found["winner"]:
        click.echo(f"  winner: {found['winner']} (chosen {found['winner_chosen_at']})")
    click.echo(f"  waiting for the winner: {found['waiting']}")
    if found["pick_winner_at"] and not found["winner"]:
        click.echo(f"  the server picks the winner at {found['pick_winner_at']} (meanwhile: campaign winner"
                   " --now)")  # fmt: skip
    if found["last_check"]:
        click.echo(f"  last check: {found['last_check']}")


from deadpixel.cli import campaigns as _stored  # noqa: E402  (the stored campaigns' commands)

for _command in _stored.COMMANDS:
    campaign.add_command(_command)


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
