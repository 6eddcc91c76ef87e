"""What a message sent back to a bounce address says: a bounce (per failed recipient, hard or soft), a
complaint, an auto-reply, or nothing deadpixel acts on.

Standard reports are read with the stdlib ``email`` package: RFC 3464 delivery status notifications
(``multipart/report; report-type=delivery-status``) and RFC 5965 feedback reports (``report-type=
feedback-report``). Bounces in the older free-form styles of qmail, Exim, Exchange and friends go to
flufl.bounce, GNU Mailman's detectors, kept up for two decades against real mail, instead of our own regexes.
Nothing here raises on bad input: a report that cannot be read is ``malformed``.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from email import policy
from email.message import Message
from email.parser import BytesParser, HeaderParser
from email.utils import getaddresses
from typing import Literal

from flufl.bounce import all_failures

from deadpixel.bounces.reasons import Reason, classify, suppresses
from deadpixel.bounces.vendors import read_free_form
from deadpixel.bounces.vendors.text import subject as decoded_subject

log = logging.getLogger(__name__)
# flufl.bounce logs a traceback before re-raising a detector's error; _non_standard logs one line instead.
logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)

Kind = Literal["bounce", "complaint", "auto-reply", "delivered", "other", "malformed"]
MAX_REASON = 500
# Where, in a report that reached a mailbox, a bounce address can stand: the headers of its delivery.
DELIVERY_HEADERS = ("delivered-to", "x-original-to", "envelope-to", "x-envelope-to", "to")
COMPLAINT_TYPES = frozenset({"abuse", "fraud", "virus", "other", "opt-out"})  # not-spam is no complaint
# Bounds on what one message may make us walk, so a hostile message stays fast.
MAX_DEPTH = 10  # MIME nesting levels looked into
MAX_PARTS = 200  # parts looked at, all levels together
MAX_HEADER = 2000  # characters of one header value read
MAX_TEXT = 64 * 1024  # characters of one text part searched for a failure's wording
MAX_JSON = 1024 * 1024  # characters of a JSON notification decoded
MAX_RECIPIENTS = 500  # failed recipients taken from one report
FIELD = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,60}:")


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
        delayed: bool = False,
    ) -> Failure:
        """A failure with its reason and suppress decision worked out from its code and text.

        A status read from the text, where the report gave none, also settles hard or soft. Only a
        permanent failure whose reason says the address is gone suppresses: "450 4.1.1 user unknown" is a
        directory lookup that may yet succeed. ``delayed``: the report is a delay notice (still retrying).
        """
        verdict = classify(status, diagnostic, permanent=hard, delayed=delayed)
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
    # Addresses a complaint or a delivery notice names (a bounce names its own in ``failures``).
    recipients: tuple[str, ...] = field(default=())


def one_line(text: object, limit: int = MAX_REASON) -> str | None:
    if not text:
        return None
    text = " ".join(str(text)[: limit * 8].split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _address(value: str | None) -> str | None:
    """``rfc822; user@example.com`` → ``user@example.com`` (lower-cased)."""
    if not value:
        return None
    _, _, address = str(value)[:MAX_HEADER].rpartition(";")
    found = getaddresses([address.strip()])
    address = found[0][1] if found else ""
    return address.lower() or None


def _status(value: str | None) -> str | None:
    if not value:
        return None
    words = str(value)[:100].split()
    code = words[0] if words else ""
    parts = code.split(".")
    if len(parts) == 3 and all(p.isdigit() and len(p) <= 3 for p in parts) and parts[0] in ("2", "4", "5"):
        return code
    return None


def _blocks(part: Message) -> list[Message]:
    """The field blocks of a message/delivery-status or message/feedback-report part."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [block for block in payload[:MAX_RECIPIENTS] if isinstance(block, Message)]
    if isinstance(payload, str):
        return _field_blocks(payload[:MAX_TEXT])
    return []


def _field_blocks(text: str) -> list[Message]:
    """Header-style blocks separated by blank lines; indented blocks (as Exchange writes them in a text part)
    are taken as if flush left, a line that is no ``Name: value`` continuing the field above it."""
    lines = []
    for line in text.replace("\r\n", "\n").split("\n"):
        bare = line.strip()
        lines.append(bare if not bare or FIELD.match(bare) else " " + bare)
    chunks = "\n".join(lines).split("\n\n")
    parser = HeaderParser(policy=policy.compat32)
    return [parser.parsestr(chunk.strip("\n")) for chunk in chunks[:MAX_RECIPIENTS] if chunk.strip()]


def _original(message: Message) -> Message | None:
    """The returned original message (or just its headers) inside a report."""
    for part in _parts(message):
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
        or "vacation" in _header(message, "X-Mailer").lower()  # the vacation(1) program and its heirs
        or subject.startswith(
            ("out of office", "automatic reply", "auto:", "autoreply", "auto-reply", "away from my mail")
        )
    )


def _parts(message: Message) -> list[Message]:
    """The message and its parts, depth first, as ``walk`` gives them, but at most MAX_PARTS of them and no
    deeper than MAX_DEPTH: what every reader here looks at."""
    found: list[Message] = []
    stack: list[tuple[Message, int]] = [(message, 0)]
    while stack and len(found) < MAX_PARTS:
        part, depth = stack.pop()
        found.append(part)
        payload = part.get_payload() if depth < MAX_DEPTH and part.is_multipart() else None
        if isinstance(payload, list):
            stack.extend(
                (child, depth + 1) for child in reversed(payload[:MAX_PARTS]) if isinstance(child, Message)
            )
    return found


def _too_big(message: Message) -> bool:
    """More parts or deeper nesting than the bounds: then readers that walk on their own stay out."""
    count = 0
    stack: list[tuple[Message, int]] = [(message, 0)]
    while stack:
        part, depth = stack.pop()
        count += 1
        if count > MAX_PARTS or depth > MAX_DEPTH:
            return True
        payload = part.get_payload() if part.is_multipart() else None
        if isinstance(payload, list):
            stack.extend((child, depth + 1) for child in payload if isinstance(child, Message))
    return False


def _header(message: Message, name: str) -> str:
    value = message.get(name)
    return str(value)[:MAX_HEADER] if value is not None else ""


def _text(part: Message) -> str:
    """A text part's decoded text, bounded; never raises on a bad charset or transfer encoding."""
    try:
        data = part.get_payload(decode=True)
    except Exception:
        return ""
    if not isinstance(data, bytes):
        return ""
    charset = str(part.get_content_charset() or "utf-8")
    try:
        return data[: MAX_TEXT * 2].decode(charset, "replace")[:MAX_TEXT]
    except LookupError:
        return data[: MAX_TEXT * 2].decode("utf-8", "replace")[:MAX_TEXT]


def _own_texts(message: Message) -> list[str]:
    """The report's own text parts, not those of the returned original (inside message/rfc822)."""
    texts: list[str] = []
    stack: list[tuple[Message, int]] = [(message, 0)]
    seen = 0
    while stack and seen < MAX_PARTS:
        part, depth = stack.pop()
        seen += 1
        kind = part.get_content_type()
        if kind in ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers"):
            continue
        if part.is_multipart():
            payload = part.get_payload()
            if depth < MAX_DEPTH and isinstance(payload, list):
                stack.extend((child, depth + 1) for child in reversed(payload) if isinstance(child, Message))
        elif part.get_content_maintype() == "text" or kind == "message/delivery-status":
            texts.append(
                _text(part) if kind != "message/delivery-status" else str(part.get_payload())[:MAX_TEXT]
            )
    return texts


RETURNED_ORIGINAL = re.compile(
    r"^\s*(?:-+ ?(?:original message|this is a copy|the (?:original|header)|below this line|"
    r"undelivered message|returned message|message headers?)|original message follows|"
    r"received: from |return-path: )",
    re.IGNORECASE,
)


# Where a free-form bounce quotes the receiving server's own reply (Gmail's, qmail's, Exim's wording).
REPLY = re.compile(
    r"(?:the error that the other server returned was|remote (?:host|server) (?:said|replied)|"
    r"smtp error from remote mail server after [^:]{0,200}):",
    re.IGNORECASE,
)
WINDOW_LINES = 20


def _wording_near(texts: list[str], address: str) -> str | None:
    """What a free-form bounce says about ``address``: the line naming it and those after it, up to a blank
    line after some text (or, when those say nothing known, up to the returned original); the server's
    quoted reply when there is one."""
    lowered = address.lower()
    for text in texts:
        lines = text.replace("\r\n", "\n").split("\n")
        for index, line in enumerate(lines):
            if lowered not in line.lower():
                continue
            short, long = [line], [line]
            for follow in lines[index + 1 : index + WINDOW_LINES]:
                if RETURNED_ORIGINAL.match(follow):
                    break
                long.append(follow)
            for follow in long[1:8]:
                if not follow.strip() and len(" ".join(short).split()) > 4:
                    break
                short.append(follow)
            whole = " ".join(long)[: MAX_REASON * 4]
            reply = REPLY.search(whole)
            if reply is not None:
                return one_line(whole[reply.end() :])
            near = one_line(" ".join(short))
            if classify(None, near).reason is Reason.OTHER:
                return one_line(whole, MAX_REASON * 2)
            return near
    return None


def _wording(texts: list[str]) -> str | None:
    """The opening of a free-form bounce's text, up to the returned original: its wording when it does not
    name the address."""
    for text in texts:
        taken: list[str] = []
        for line in text.replace("\r\n", "\n").split("\n")[:60]:
            if RETURNED_ORIGINAL.match(line):
                break
            taken.append(line)
        if "".join(taken).strip():
            return one_line(" ".join(taken), 1500)
    return None


def _recipient_failure(block: Message) -> Failure | None:
    """One per-recipient block of a delivery status report: a failure, or None (delivered, or not a block
    about a recipient)."""
    action = _header(block, "Action").strip().lower()
    raw_status = _header(block, "Status").strip()
    status = _status(raw_status)
    if action in ("delivered", "relayed", "expanded") or (status or "").startswith("2"):
        return None
    basic = raw_status[:3] if raw_status[:3].isdigit() and raw_status[0] in "45" else None
    if action not in ("failed", "failure", "delayed") and status is None and basic is None:
        return None
    hard = status.startswith("5") if status else (basic.startswith("5") if basic else action != "delayed")
    recipient = _address(block.get("Final-Recipient"))
    original = _address(block.get("Original-Recipient"))
    if recipient is None and original is None:
        return None
    diagnostic = one_line(block.get("Diagnostic-Code")) or one_line(raw_status)
    # X.400 gateways put an X.400 code in Diagnostic-Code and the SMTP server's reply in this field.
    supplement = one_line(block.get("X400-Supplementary-Info"))
    if supplement and classify(status, diagnostic).reason is Reason.OTHER:
        diagnostic = supplement
    return Failure.of(recipient, original, hard, status, diagnostic, delayed=action == "delayed")


def _worded(failure: Failure, texts: list[str], delayed: bool) -> Failure:
    """A failure whose report gave no Diagnostic-Code (only a Status), read again with the words the
    report's human-readable part says about its address."""
    address = failure.recipient or failure.original_recipient
    if address is None or (failure.diagnostic and failure.diagnostic != failure.status):
        return failure
    said = _wording_near(texts, address)
    if said is None:
        return failure
    return Failure.of(
        failure.recipient, failure.original_recipient, failure.hard, failure.status, said, delayed=delayed
    )


def _recipient_blocks(blocks: list[Message]) -> list[Message]:
    return [
        b for b in blocks if b.get("Final-Recipient") is not None or b.get("Original-Recipient") is not None
    ]


def _delivered(block: Message) -> bool:
    action = _header(block, "Action").strip().lower()
    return action in ("delivered", "relayed", "expanded") or (_status(block.get("Status")) or "").startswith(
        "2"
    )


def _delivery_status(message: Message) -> tuple[list[Failure], list[str]] | None:
    """(failures, delivered addresses) of an RFC 3464 report; None when it has no readable per-recipient
    block, in a delivery-status part or, as Exchange and WorkMail sometimes put it, in a text part."""
    blocks: list[Message] = []
    for part in _parts(message):
        if part.get_content_type() in ("message/delivery-status", "message/global-delivery-status"):
            blocks = _recipient_blocks(_blocks(part))
            if blocks:
                break
    if not blocks:
        for text in _own_texts(message):
            at = text.lower().find("final-recipient:")
            if at >= 0:
                blocks = _recipient_blocks(_field_blocks(text[max(0, text.rfind("\n", 0, at)) :]))
                if blocks:
                    break
    if not blocks:
        return None
    read = [
        (f, _header(b, "Action").strip().lower() == "delayed") for b in blocks if (f := _recipient_failure(b))
    ]
    failures = [f for f, _ in read]
    if any(not f.diagnostic or f.diagnostic == f.status for f in failures):
        texts = [t for t in _own_texts(message) if "final-recipient:" not in t.lower()]
        failures = [_worded(f, texts, delayed) for f, delayed in read]
    delivered = [
        a for block in blocks if _delivered(block)
        if (a := _address(block.get("Final-Recipient")) or _address(block.get("Original-Recipient")))
    ]  # fmt: skip
    if not failures and not delivered:
        return None
    return failures, delivered


def _feedback_type(message: Message) -> tuple[str | None, tuple[str, ...], tuple[str, ...]]:
    """(Feedback-Type, Original-Mail-From values, Original-Rcpt-To addresses) of an RFC 5965 report."""
    for part in _parts(message):
        if part.get_content_type() == "message/feedback-report":
            blocks = _blocks(part)
            fields = blocks[0] if blocks else None
            if fields is None or fields.get("Feedback-Type") is None:
                return None, (), ()
            rcpts = tuple(a for v in (fields.get_all("Original-Rcpt-To") or ()) if (a := _address(str(v))))
            return (
                _header(fields, "Feedback-Type").strip().lower(),
                _header_values(fields, ("original-mail-from",)),
                rcpts,
            )
    return None, (), ()


FLUFL_TEXT = 8 * 1024  # characters of each of the notice's own text parts flufl.bounce scans
FLUFL_PARTS = 8  # of its text parts


def _for_flufl(message: Message) -> Message:
    """What flufl.bounce's detectors scan: the notice's headers and its own text parts, each cut short, and
    not the returned original or its attachments. The detectors test every line of every part against
    dozens of patterns; a bounce states its failures near the start, so this bounds the time a large
    message costs (tens of milliseconds for a 30 kB one) without losing what they look for."""
    texts = [text[:FLUFL_TEXT] for text in _own_texts(message)[:FLUFL_PARTS]]
    if sum(map(len, texts)) <= FLUFL_TEXT and not message.is_multipart():
        return message
    trimmed = Message()
    for name, value in message.items()[:200]:
        if name.lower() not in ("content-type", "content-transfer-encoding"):
            trimmed[name] = value
    trimmed["Content-Type"] = 'multipart/mixed; boundary="deadpixel-trimmed"'
    for text in texts:
        part = Message()
        part["Content-Type"] = 'text/plain; charset="utf-8"'
        part.set_payload(text)
        trimmed.attach(part)
    return trimmed


def _flufl(message: Message) -> list[Failure]:
    """Free-form bounces, through flufl.bounce's detectors; the wording is then read from the text near
    each address, so that a code and a reason can be found for it."""
    if _too_big(message):
        return []
    try:
        temporary, permanent = all_failures(_for_flufl(message))
    except Exception as exc:  # a detector tripping over odd input (no From, say) must not stop the rest
        log.warning(
            "flufl.bounce could not read a message: %s: %s", type(exc).__name__, one_line(str(exc), 200)
        )
        return []
    texts = _own_texts(message)
    fallback = _wording(texts) or one_line(f"non-standard bounce: {_header(message, 'Subject')}")
    failures: list[Failure] = []
    for raw, hard in [
        *((a, True) for a in permanent),
        *((a, False) for a in temporary if a not in permanent),
    ]:
        address = raw.decode("utf-8", "replace").lower()[:MAX_HEADER]
        failures.append(Failure.of(address, None, hard, None, _wording_near(texts, address) or fallback))
    return failures[:MAX_RECIPIENTS]


# A free-form notice that says the message is still being retried: a delay notice, not a final failure.
DELAY_NOTICE = re.compile(
    r"has been delayed|will be retried|delivery attempts will continue|has not yet been delivered|"
    r"only a temporary failure|is delayed for more than|message delayed",
    re.IGNORECASE,
)
# What makes a message a bounce candidate for flufl.bounce, whose detectors scan every line of every part
# with dozens of patterns (tens of milliseconds on a 20 kB newsletter): sent by a mail system, titled like
# a delivery notice, or carrying a failed-recipients header. Anything else is left alone without a scan.
DAEMON_SENDERS = re.compile(
    r"mailer-daemon|postmaster|mail delivery|mail administrator|mailadm|daemon@|delivery subsystem|"
    r"mail system|mmdf|autoreply|bounce",
    re.IGNORECASE,
)
BOUNCE_TITLES = re.compile(
    r"undeliver|deliver|returned|bounce|fail|error|reject|unable|unknown|non-?remis|nicht zustellbar|"
    r"problem|warning|notif|not (?:be )?(?:sent|received)",
    re.IGNORECASE,
)


def _could_be_a_bounce(message: Message) -> bool:
    if message.get("X-Failed-Recipients") is not None or message.get_content_type() == "multipart/report":
        return True
    if _header(message, "Return-Path").strip() == "<>":
        return True
    senders = " ".join(_header(message, name) for name in ("From", "Sender"))
    return bool(DAEMON_SENDERS.search(senders) or BOUNCE_TITLES.search(decoded_subject(message)))


def _with_wording(failure: Failure, texts: list[str], delayed: bool) -> Failure:
    """A free-form failure whose reader found no known reason, read again with the notice's own words: the
    lines about its address, else the notice's opening (where a notice states one reason for every
    recipient it lists)."""
    address = failure.recipient
    if (failure.reason is not Reason.OTHER and failure.status is not None) or address is None:
        return failure
    for said in (_wording_near(texts, address), _wording(texts)):
        if said is not None and classify(None, said).reason is not Reason.OTHER:
            return Failure.of(address, None, failure.hard, failure.status, said, delayed=delayed)
    return failure


def _non_standard(message: Message) -> tuple[str, list[Failure]]:
    """Free-form bounces: the project's own readers (deadpixel.bounces.vendors) first, then flufl.bounce
    (for messages that could be a bounce at all)."""
    found = read_free_form(message)
    if found is not None:
        name, items = found
        texts = _own_texts(message)
        delayed = any(DELAY_NOTICE.search(text[:MAX_TEXT]) for text in texts)
        failures = [
            _with_wording(
                Failure.of(
                    item.address, None, item.permanent is not False, item.status, item.diagnostic, delayed
                ),
                texts,
                delayed,
            )
            for item in items[:MAX_RECIPIENTS]
        ]
        return f"non-standard bounce ({name})", failures
    if not _could_be_a_bounce(message):
        return "non-standard bounce", []
    return "non-standard bounce", _flufl(message)


SES_SUBTYPES = {  # Amazon SES bounceSubType -> wording the reason rules read, when it gave no diagnostic
    "NoEmail": "the address does not exist",
    "Suppressed": "has a recent history of bouncing as an invalid address",
    "OnAccountSuppressionList": "the address is on the suppression list for your account",
    "MailboxFull": "mailbox full",
    "MessageTooLarge": "message too large",
    "ContentRejected": "content rejected",
    "AttachmentRejected": "content rejected: attachment",
}


def _json_notification(message: Message) -> dict[str, object] | None:
    """The Amazon SES notification a message carries as its body (SNS delivers them so), if any."""
    if message.is_multipart() or message.get_content_maintype() not in ("text", "application"):
        return None
    body = _text(message).strip()
    if not body.startswith("{") or len(body) > MAX_JSON:
        return None
    try:
        data = json.loads(body)
        if isinstance(data, dict) and isinstance(data.get("Message"), str):  # the SNS envelope (email-json)
            data = json.loads(data["Message"][:MAX_JSON])
    except (ValueError, RecursionError):
        return None
    if isinstance(data, dict) and ("notificationType" in data or "eventType" in data):
        return data
    return None


def _dicts(value: object) -> list[dict[str, object]]:
    return [v for v in value[:MAX_RECIPIENTS] if isinstance(v, dict)] if isinstance(value, list) else []


def _ses(data: dict[str, object], delivered_to: tuple[str, ...]) -> Report:
    kind = str(data.get("notificationType") or data.get("eventType") or "")
    mail = data.get("mail") if isinstance(data.get("mail"), dict) else {}
    assert isinstance(mail, dict)
    source = (str(mail["source"])[:MAX_HEADER],) if isinstance(mail.get("source"), str) else ()
    detail = data.get(kind.lower()) if isinstance(data.get(kind.lower()), dict) else {}
    assert isinstance(detail, dict)
    if kind == "Bounce":
        hard = detail.get("bounceType") == "Permanent"
        sub = str(detail.get("bounceSubType") or "")
        failures = []
        for rcpt in _dicts(detail.get("bouncedRecipients")):
            address = _address(str(rcpt.get("emailAddress") or ""))
            said = one_line(rcpt.get("diagnosticCode")) or SES_SUBTYPES.get(sub)
            status = _status(str(rcpt.get("status") or ""))
            failures.append(Failure.of(address, None, hard, status, said or one_line(f"Amazon SES: {sub}")))
        if not failures:
            return Report("malformed", "Amazon SES bounce notification without recipients")
        return Report("bounce", "Amazon SES bounce notification", tuple(failures), delivered_to, source)
    if kind == "Complaint":
        feedback = str(detail.get("complaintFeedbackType") or "abuse").strip().lower()[:40]
        rcpts = tuple(
            a
            for r in _dicts(detail.get("complainedRecipients"))
            if (a := _address(str(r.get("emailAddress") or "")))
        )
        if feedback not in COMPLAINT_TYPES:
            return Report("other", f"Amazon SES feedback of type {feedback!r}")
        return Report(
            "complaint", f"Amazon SES complaint notification ({feedback})", feedback_type=feedback,
            delivered_to=delivered_to, original_from=source, recipients=rcpts,
        )  # fmt: skip
    if kind == "Delivery":
        rcpts = tuple(a for r in detail.get("recipients") or () if isinstance(r, str) if (a := _address(r)))
        return Report("delivered", "Amazon SES delivery notification", recipients=rcpts[:MAX_RECIPIENTS])
    return Report("other", f"Amazon SES notification of type {kind[:40]!r}")


HOTMAIL_SENDERS = ("hotmail.com", "outlook.com", "live.com", "msn.com", "email-abuse.amazonses.com")


def _hotmail_complaint(message: Message) -> Report | None:
    """The Hotmail/Outlook.com feedback loop: a complaint about a message (attached whole) with no
    feedback-report part; the recipient who complained is in the attached message's
    X-HmXmrOriginalRecipient header."""
    sender = _address(_header(message, "From")) or ""
    if (
        not sender.endswith(HOTMAIL_SENDERS)
        or "complaint about message from" not in _header(message, "Subject").lower()
    ):
        return None
    original = _original(message)
    if original is None:
        return None
    rcpts = tuple(a for v in (original.get_all("X-HmXmrOriginalRecipient") or ()) if (a := _address(str(v))))
    return Report(
        "complaint", "feedback loop complaint (Hotmail style)", feedback_type="abuse",
        delivered_to=_header_values(message, DELIVERY_HEADERS),
        original_from=_header_values(original, ("return-path",)), recipients=rcpts,
    )  # fmt: skip


MAX_HEADER_SECTION = 256 * 1024  # bytes of the report's own header section


def _hostile(raw: bytes) -> str | None:
    """Why a message is refused before the MIME parser sees it: the stdlib parser's time grows with the
    square of the nesting depth, and with every part, so a crafted message could hold it for seconds.
    (Byte counts, in C: a few milliseconds for the largest message taken.)"""
    head = raw[: MAX_HEADER_SECTION + 2]
    if len(raw) > MAX_HEADER_SECTION and b"\n\n" not in head and b"\n\r\n" not in head:
        return f"a header section over {MAX_HEADER_SECTION} bytes"
    lowered = raw.lower()
    if lowered.count(b"boundary") + lowered.count(b"message/") > MAX_DEPTH * 3:
        return f"more than {MAX_DEPTH * 3} MIME containers"
    if raw.count(b"\n--") > MAX_PARTS * 2:
        return f"more than {MAX_PARTS * 2} MIME boundary lines"
    return None


def read_report(raw: bytes) -> Report:
    refused = _hostile(raw)
    if refused is not None:
        return Report("malformed", f"not read: {refused}")
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
    report_type = str(message.get_param("report-type", "") or "").lower()[:100]
    if content_type == "multipart/report" and report_type == "feedback-report":
        feedback, mail_from, rcpts = _feedback_type(message)
        if feedback is None:
            return Report("malformed", "feedback report without a Feedback-Type", delivered_to=delivered_to)
        if feedback not in COMPLAINT_TYPES:
            return Report("other", f"feedback report of type {feedback[:40]!r}")
        return Report(
            "complaint", f"feedback report ({feedback})", feedback_type=feedback,
            delivered_to=delivered_to, original_from=(*mail_from, *returned), recipients=rcpts,
        )  # fmt: skip
    hotmail = _hotmail_complaint(message)
    if hotmail is not None:
        return hotmail
    notification = _json_notification(message)
    if notification is not None:
        return _ses(notification, delivered_to)
    standard = _delivery_status(message)
    if standard is not None:
        failures, delivered = standard
        if failures:
            return Report("bounce", "delivery status report", tuple(failures), delivered_to, returned)
        return Report(
            "delivered", "delivery status report of successful delivery", recipients=tuple(delivered)
        )
    if content_type != "multipart/report" and _is_auto_reply(message):
        return Report("auto-reply", "auto-reply or out-of-office")
    note, failures = _non_standard(message)
    if failures:
        return Report("bounce", note, tuple(failures), delivered_to, returned)
    if content_type == "multipart/report" and report_type == "delivery-status":
        return Report("malformed", "delivery status report without recipient fields")
    if _is_auto_reply(message):
        return Report("auto-reply", "auto-reply or out-of-office")
    return Report("other", "neither a bounce nor a complaint")
