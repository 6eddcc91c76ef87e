"""Stored campaigns on the command line: ``campaign send --at/--after`` stores one for the server to send;
``campaign status``, ``pause``, ``resume``, ``cancel``, ``problems`` and ``list`` follow and steer it.

The commands change the store only; the server (``deadpixel serve``) does the sending and notices a pause
or a cancel within about a second. Each change is audited as ``cli``.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

import click

from deadpixel.cli.context import Cli, json_option, pass_cli, print_json

if TYPE_CHECKING:
    from deadpixel.send.recipients import Rows
    from deadpixel.store.campaign_jobs import Content


def schedule_stored(
    cli: Cli,
    name: str,
    content: Content,
    recipients: Rows,
    at: str | None,
    after: str | None,
    as_json: bool,
    *,
    best_time: bool = False,
) -> None:
    """``campaign send NAME ... --at/--after``: store the campaign and its rows, due then; with
    ``best_time``, each row due at its recipient's best hour. A follow-up to a segment stores no rows: the
    segment is evaluated when it is sent."""
    from zoneinfo import ZoneInfo

    from deadpixel.send import stored
    from deadpixel.send.best_time import at_best_times
    from deadpixel.send.when import due_time
    from deadpixel.store import audit

    zone = ZoneInfo(cli.settings.timezone)
    now = time.time()
    follow_up = content.options.get("segment") is not None
    rows = [] if follow_up else stored.stored_rows(recipients.rows())
    if best_time:
        cli.fold_rollups()
        with cli.store() as conn:
            rows = at_best_times(conn, rows, now, zone)
        due_at = min((row.due_at or now for row in rows), default=now)
    else:
        due_at = due_time(at, after, zone, now)
    with cli.store(writer=True) as conn:
        job = stored.store(conn, name, content, rows, actor=audit.CLI, due_at=due_at)
    view = stored.status_view(job)
    if as_json:
        print_json(view)
        return
    if follow_up:
        what = f"the segment {content.options['segment']!r} as it is then"
    elif best_time:
        last = max((row.due_at or now for row in rows), default=now)
        what = f"{job.total} rows, each at its recipient's best hour, the last at {iso(last)}"
    else:
        what = f"{job.total} rows"
    click.echo(
        f"Scheduled {name!r}: {what}; due {view['due_at']} (UTC). The server (deadpixel serve)"
        f" sends it; follow it with: deadpixel campaign status {_quoted(name)}"
    )


def iso(at: float) -> str:
    from deadpixel.reports.analytics import iso as as_iso

    return as_iso(at) or ""


def _quoted(name: str) -> str:
    import shlex

    return shlex.quote(name)


def _lines(view: dict[str, Any]) -> list[str]:
    lines = [
        f"Campaign {view['campaign']!r}: {view['state']}"
        + (f", next message due {view['due_at']}" if view["due_at"] else ""),
        f"  sent {view['sent']}, failed {view['failed']}, skipped {view['skipped']}, left {view['left']}"
        f" of {view['total']} rows",
    ]
    if view["problems"]:
        lines.append(
            f"  {view['problems']} problems: deadpixel campaign problems {_quoted(view['campaign'])}"
        )
    if view["note"]:
        lines.append(f"  note: {view['note']}")
    return lines


@click.command("status")
@click.argument("name")
@json_option
@pass_cli
def status(cli: Cli, name: str, as_json: bool) -> None:
    """The state and progress of campaign NAME's stored send."""
    from deadpixel.send import stored

    with cli.store() as conn:
        view = stored.status_view(stored.current(conn, name))
    if as_json:
        print_json(view)
        return
    for line in _lines(view):
        click.echo(line)


def _action(action: str, help_text: str) -> click.Command:
    @click.command(action, help=help_text)
    @click.argument("name")
    @pass_cli
    def command(cli: Cli, name: str) -> None:
        from deadpixel.send import stored
        from deadpixel.store import audit

        with cli.store(writer=True) as conn:
            view = stored.status_view(stored.act(conn, name, action, actor=audit.CLI))
        click.echo(_lines(view)[0])

    return command


pause = _action("pause", "Pause campaign NAME's send; the server stops within about a second.")
resume = _action("resume", "Resume campaign NAME's paused send where it stopped.")
cancel = _action("cancel", "Cancel campaign NAME's send for good (what was sent stays sent).")


@click.command("problems")
@click.argument("name")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV (line, value, kind, reason).")
@json_option
@pass_cli
def problems(cli: Cli, name: str, as_csv: bool, as_json: bool) -> None:
    """Rows of campaign NAME's stored send that were not sent, and why."""
    from deadpixel.send import stored

    with cli.store() as conn:
        found = stored.problems(conn, name)
    if as_csv:
        sys.stdout.write(stored.problems_csv(found))
    elif as_json:
        print_json(found)
    elif not found:
        click.echo("No problems.")
    else:
        for problem in found:
            click.echo(
                f"line {problem['line']}: {problem['value']!r}: {problem['kind']}: {problem['reason']}"
            )


@click.command("list")
@json_option
@pass_cli
def list_campaigns(cli: Cli, as_json: bool) -> None:
    """Every campaign, with its stored send's state and progress (if it has one)."""
    from deadpixel.send import stored
    from deadpixel.store import campaign_jobs
    from deadpixel.store.schema import campaigns

    with cli.store() as conn:
        names = [row.name for row in conn.execute(campaigns.select().order_by(campaigns.c.name))]
        sends = campaign_jobs.newest_per_campaign(conn)
    views = [
        {"campaign": name, "send": stored.status_view(sends[name]) if name in sends else None}
        for name in names
    ]
    if as_json:
        print_json(views)
        return
    if not views:
        click.echo("No campaigns yet.")
    for view in views:
        send = view["send"]
        if send is None:
            click.echo(f"{view['campaign']:<40}  -")
            continue
        due = f"  due {send['due_at']}" if send["state"] == "scheduled" and send["due_at"] else ""
        click.echo(f"{view['campaign']:<40}  {send['state']:<10} {send['sent']}/{send['total']} sent{due}")


COMMANDS = (status, pause, resume, cancel, problems, list_campaigns)
