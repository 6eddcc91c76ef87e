"""What a message sent back to a bounce address says: a bounce (per failed recipient, hard or soft), a
complaint, an auto-reply, or nothing deadpixel acts on.

Standard reports are read with the stdlib ``email`` package: RFC 3464 delivery status notifications
(``multipart/report; report-type=delivery-status``) and RFC 5965 feedback reports (``report-type=
feedback-report``). Bounces in the older free-form styles of qmail, Exim, Exchange and friends go to
flufl.bounce, GNU Mailman's detectors, kept up for two decades against real mail, instead of our own regexes.
Nothing here raises on bad input: a report that cannot be read is ``malformed``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from email import policy
from email.message import Message
from email.parser import BytesParser, HeaderParser
from email.utils import getaddresses
from typing import Literal

from flufl.bounce import all_failures

from deadpixel.bounces.reasons import Reason, classify, suppresses

log = logging.getLogger(__name__)
# flufl.bounce logs a traceback before re-raising a detector's error; _non_standard logs one line instead.
logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)

Kind = Literal["bounce", "complaint", "auto-reply", "delivered", "other", "malformed"]
MAX_REASON = 500
# Where, in a report that reached a mailbox, a bounce address can stand: the headers of its delivery.
DELIVERY_HEADERS = ("delivered-to", "x-original-to", "envelope-to", "x-envelope-to", "to")
COMPLAINT_TYPES = frozenset({"abuse", "fraud", "virus", "other"})  # not-spam is no complaint


@dataclass(frozen=True, slots=True)
class Failure:
    """One recipient the report says was not delivered."""

    recipient: str | None  # Final-Recipient, the address as the receiving side knew it
    original_recipient: str | None  # Original-Recipient, the address as deadpixel sent to it
    hard: bool  # permanent (5.x.x, or failed with no code); a soft failure may be retried
    status: str | None  # enhanced status code: 5.1.1, 4.2.2, ...
    diagnostic: str | None  # the receiving server's text
    reason: Reason = Reason.OTHER  # why, in the fixed vocabulary of deadpixel.bounces.reasons
    suppress: bool = False  # does this failure alone say the address does not exist?

    @classmethod
    def of(
        cls,
        recipient: str | None,
        original_recipient: str | None,
        hard: bool,
        status: str | None,
        diagnostic: str | None,
    ) -> Failure:
        """A failure with its reason and suppress decision worked out from its code and text.

        A status read from the text, where the report gave none, also settles hard or soft. Only a
        permanent failure whose reason says the address is gone suppresses: "450 4.1.1 user unknown" is a
        directory lookup that may yet succeed.
        """
        verdict = classify(status, diagnostic, permanent=hard)
        if status is None and verdict.status is not None:
            hard = verdict.status.startswith("5")
        return cls(
            recipient, original_recipient, hard, verdict.status, diagnostic,
            verdict.reason, hard and suppresses(verdict.reason),
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Report:
    kind: Kind
    note: str  # why this kind, for the log
    failures: tuple[Failure, ...] = ()
    # Header values of the report's own delivery, then of the returned original (Return-Path, the
    # feedback report's Original-Mail-From): where a bounce address found in a mailbox can come from.
    delivered_to: tuple[str, ...] = field(default=())
    original_from: tuple[str, ...] = field(default=())
    feedback_type: str | None = None  # of a complaint: abuse, fraud, virus, other, opt-out


def one_line(text: str | None, limit: int = MAX_REASON) -> str | None:
    if not text:
        return None
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _address(value: str | None) -> str | None:
    """``rfc822; user@example.com`` → ``user@example.com`` (lower-cased)."""
    if not value:
        return None
    _, _, address = str(value).rpartition(";")
    found = getaddresses([address.strip()])
    address = found[0][1] if found else ""
    return address.lower() or None


def _status(value: str | None) -> str | None:
    if not value:
        return None
    code = str(value).split()[0] if str(value).split() else ""
    parts = code.split(".")
    if len(parts) == 3 and all(p.isdigit() and len(p) <= 3 for p in parts) and parts[0] in ("2", "4", "5"):
        return code
    return None


def _blocks(part: Message) -> list[Message]:
    """The field blocks of a message/delivery-status or message/feedback-report part."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [block for block in payload if isinstance(block, Message)]
    if isinstance(payload, str):
        return [HeaderParser(policy=policy.compat32).parsestr(chunk) for chunk in payload.split("\n\n")]
    return []


def _recipient_failure(block: Message) -> Failure | None:
    action = str(block.get("Action", "")).strip().lower()
    status = _status(block.get("Status"))
    if action in ("delivered", "relayed", "expanded") or (status or "").startswith("2"):
        return None
    if action not in ("failed", "delayed") and status is None:
        return None
    hard = status.startswith("5") if status else action == "failed"
    return Failure.of(
        recipient=_address(block.get("Final-Recipient")),
        original_recipient=_address(block.get("Original-Recipient")),
        hard=hard,
        status=status,
        diagnostic=one_line(block.get("Diagnostic-Code")) or one_line(block.get("Status")),
    )


def _original(message: Message) -> Message | None:
    """The returned original message (or just its headers) inside a report."""
    for part in message.walk():
        kind = part.get_content_type()
        if kind == "message/rfc822":
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                return inner[0]
        elif kind == "text/rfc822-headers":
            text = part.get_payload(decode=True)
            if isinstance(text, bytes):
                return HeaderParser(policy=policy.compat32).parsestr(text.decode("utf-8", "replace"))
    return None


def _header_values(message: Message | None, names: tuple[str, ...]) -> tuple[str, ...]:
    if message is None:
        return ()
    return tuple(str(value) for name in names for value in (message.get_all(name) or ()))


def _is_auto_reply(message: Message) -> bool:
    """RFC 3834 and the older vacation-program markers; mail from a mailer daemon is a bounce, not a reply."""
    sender = _address(str(message.get("From", ""))) or ""
    if sender.split("@")[0] in ("mailer-daemon", "postmaster"):
        return False
    submitted = str(message.get("Auto-Submitted", "no")).strip().lower()
    precedence = str(message.get("Precedence", "")).strip().lower()
    subject = str(message.get("Subject", "")).strip().lower()
    return (
        submitted.startswith("auto-")
        or any(message.get(name) is not None for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponder"))
        or precedence == "auto_reply"
        or subject.startswith(("out of office", "automatic reply", "auto:", "autoreply", "auto-reply"))
    )


def _delivery_status(message: Message) -> list[Failure] | None:
    """The failed recipients of an RFC 3464 report; None when it has no readable delivery-status part."""
    for part in message.walk():
        if part.get_content_type() in ("message/delivery-status", "message/global-delivery-status"):
            blocks = _blocks(part)
            if len(blocks) < 2:  # per-message fields, then one block per recipient
                return None
            return [f for block in blocks[1:] if (f := _recipient_failure(block)) is not None]
    return None


def _feedback_type(message: Message) -> tuple[str | None, tuple[str, ...]]:
    for part in message.walk():
        if part.get_content_type() == "message/feedback-report":
            blocks = _blocks(part)
            fields = blocks[0] if blocks else None
            if fields is None or fields.get("Feedback-Type") is None:
                return None, ()
            return str(fields["Feedback-Type"]).strip().lower(), _header_values(
                fields, ("original-mail-from",)
            )
    return None, ()


def _non_standard(message: Message) -> list[Failure]:
    """Free-form bounces, through flufl.bounce's detectors (addresses only; no status codes to read)."""
    try:
        temporary, permanent = all_failures(message)
    except Exception as exc:  # a detector tripping over odd input (no From, say) must not stop the rest
        log.warning(
            "flufl.bounce could not read a message: %s: %s", type(exc).__name__, one_line(str(exc), 200)
        )
        return []
    reason = one_line(f"non-standard bounce: {message.get('Subject', '')}")
    failures = [Failure.of(a.decode("utf-8", "replace").lower(), None, True, None, reason) for a in permanent]
    failures += [
        Failure.of(a.decode("utf-8", "replace").lower(), None, False, None, reason)
        for a in temporary
        if a not in permanent
    ]
    return failures


def read_report(raw: bytes) -> Report:
    try:
        message = BytesParser(policy=policy.compat32).parsebytes(raw)
        return _read(message)
    except Exception as exc:  # the email package is lenient; anything it still cannot take is malformed
        return Report("malformed", f"cannot parse: {type(exc).__name__}: {one_line(str(exc), 200)}")


def _read(message: Message) -> Report:
    delivered_to = _header_values(message, DELIVERY_HEADERS)
    original = _original(message)
    returned = _header_values(original, ("return-path",))
    content_type = message.get_content_type()
    report_type = str(message.get_param("report-type", "") or "").lower()
    if content_type == "multipart/report" and report_type == "feedback-report":
        feedback, mail_from = _feedback_type(message)
        if feedback is None:
            return Report("malformed", "feedback report without a Feedback-Type", delivered_to=delivered_to)
        if feedback not in COMPLAINT_TYPES:
            return Report("other", f"feedback report of type {feedback!r}")
        return Report(
            "complaint", f"feedback report ({feedback})", feedback_type=feedback,
            delivered_to=delivered_to, original_from=(*mail_from, *returned),
        )  # fmt: skip
    if content_type == "multipart/report" and report_type == "delivery-status":
        failures = _delivery_status(message)
        if failures is None:
            failures = _non_standard(message)
            if not failures:
                return Report("malformed", "delivery status report without recipient fields")
        if not failures:
            return Report("other", "delivery status report of successful delivery")
        return Report("bounce", "delivery status report", tuple(failures), delivered_to, returned)
    if _is_auto_reply(message):
        return Report("auto-reply", "auto-reply or out-of-office")
    failures = _non_standard(message)
    if failures:
        return Report("bounce", "non-standard bounce", tuple(failures), delivered_to, returned)
    return Report("other", "neither a bounce nor a complaint")
