"""The sending commands: ``deadpixel send`` and ``deadpixel campaign send``.

Kept apart from ``deadpixel.cli`` so that commands which never send mail do not import the mail stack.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from sqlalchemy import Engine

from deadpixel.config import Settings, ensure_data_dir, load_settings


@contextmanager
def migrated_engine(settings: Settings) -> Iterator[Engine]:
    from deadpixel.store.db import create_engine
    from deadpixel.store.migrate import ensure_current

    ensure_data_dir(settings)
    engine = create_engine(settings.database_url)
    try:
        ensure_current(engine)
        yield engine
    finally:
        engine.dispose()


def read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise click.ClickException(
            f"{what} {path} is not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    except OSError as exc:
        raise click.ClickException(f"cannot read {what} {path}: {exc.strerror}") from None


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


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
def send(
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

    settings = load_settings()
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
    with migrated_engine(settings) as engine:
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
