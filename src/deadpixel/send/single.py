"""``deadpixel send``: one tracked message, stored before it goes out, marked sent or failed after.

Order matters: the message row and its links are committed (as a draft) before SMTP sees the message, so
the first pixel fetch or click, which can come within a second of delivery, always finds them. ``sent_at``
is written only once the server has accepted the message; that is the clock the verdict timing rules use.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from sqlalchemy import Engine

from deadpixel.config import Settings
from deadpixel.errors import DeadpixelError
from deadpixel.mail.addresses import BadAddress, parse_recipient
from deadpixel.mail.smtp import DeliveryError, SMTPSender, SMTPSettings, send_with_retries
from deadpixel.mail.utm import Utm
from deadpixel.security.keys import load_or_create_keys
from deadpixel.security.tokens import TokenSigner
from deadpixel.send.tracked import Tracker
from deadpixel.store.links import save_links
from deadpixel.store.messages import create_message
from deadpixel.store.sending import mark_failed, mark_sent


@dataclass
class Outgoing:
    sender: str
    to: str
    subject: str
    html: str
    text: str | None = None
    cc: Sequence[str] = ()
    campaign: str | None = None
    track: bool = True
    utm_source: str | None = None  # tag the tracked links (deadpixel.mail.utm) with this utm_source


@dataclass
class SendResult:
    message_id: str | None  # None for untracked mail: there is nothing to record about it
    status: str  # sent, failed or draft (dry run)
    links: int
    refused: dict[str, str] = field(default_factory=dict)  # recipients refused while others got it
    error: DeliveryError | None = None


class SendFailed(DeadpixelError):
    def __init__(self, result: SendResult) -> None:
        super().__init__(str(result.error))
        self.result = result


def send_one(
    settings: Settings,
    engine: Engine,
    mail: Outgoing,
    *,
    smtp: SMTPSettings | None,
    dry_run: Path | None = None,
    retries: int = 3,
    backoff: float = 1.0,
    sleep: Callable[[float], object] = time.sleep,
) -> SendResult:
    """Store, compose and send (or write ``dry_run``). Raises SendFailed, with the message marked failed."""
    utm = Utm(mail.campaign or "", mail.utm_source) if mail.utm_source else None
    tracker = Tracker(settings, TokenSigner(load_or_create_keys(settings.keys_file)), utm)
    try:
        recipient = parse_recipient(mail.to)
    except BadAddress as exc:
        raise ValueError(f"--to {mail.to!r}: {exc}") from None
    copies = []
    for value in mail.cc:
        try:
            copies.append(parse_recipient(value))
        except BadAddress as exc:
            raise ValueError(f"--cc {value!r}: {exc}") from None
    # Parsed once: the To and Cc headers and the envelope recipients all come from these same addresses.
    envelope: dict[str, str] = {}  # one RCPT per mailbox, however it was written
    for r in (recipient, *copies):
        envelope.setdefault(r.key, r.address)
    with engine.begin() as conn:
        message_id = (
            create_message(
                conn,
                recipient=recipient.address,
                subject=mail.subject,
                campaign=mail.campaign,
                status="draft",
            )
            if mail.track
            else None
        )
        composed = tracker.compose(
            message_id, sender=mail.sender, to=[recipient.header], cc=[c.header for c in copies],
            subject=mail.subject, html=mail.html, text=mail.text,
        )  # fmt: skip
        if message_id is not None:
            save_links(conn, [(message_id, composed.links)])
    links = len(composed.links)
    if dry_run is not None:
        dry_run.write_bytes(bytes(composed.message))
        return SendResult(message_id, "draft", links)
    assert smtp is not None
    try:
        refused = deliver(
            smtp, composed.message, envelope_from=tracker.envelope_from(message_id),
            recipients=list(envelope.values()), retries=retries, backoff=backoff, sleep=sleep,
        )  # fmt: skip
    except DeliveryError as error:
        if message_id is not None:
            with engine.begin() as conn:
                mark_failed(conn, [message_id])
        raise SendFailed(SendResult(message_id, "failed", links, error=error)) from error
    if message_id is not None:
        with engine.begin() as conn:
            mark_sent(conn, [message_id], time.time())
    details = {rcpt: f"{code} {reply.decode('utf-8', 'replace')}" for rcpt, (code, reply) in refused.items()}
    return SendResult(message_id, "sent", links, details)


def deliver(
    smtp: SMTPSettings,
    message: EmailMessage,
    *,
    envelope_from: str | None,
    recipients: list[str],
    retries: int = 3,
    backoff: float = 1.0,
    sleep: Callable[[float], object] = time.sleep,
) -> dict[str, tuple[int, bytes]]:
    """One message over one SMTP connection, temporary failures retried; the recipients refused while others
    got it. Raises DeliveryError."""
    with SMTPSender(smtp) as sender:
        return send_with_retries(
            sender, message, envelope_from=envelope_from, recipients=recipients, attempts=retries + 1,
            backoff=backoff, sleep=sleep,
        )  # fmt: skip
