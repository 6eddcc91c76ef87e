"""Recording a report about one message: the report row, the message's bounce summary, the suppression list.

Only the message's own recipient is ever suppressed, never an address the report names: a report can be
written by anyone who holds a bounce address, so what it says selects among the message's facts but cannot
add to them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from deadpixel.bounces.parse import Failure, Report
from deadpixel.store.schema import bounces, messages
from deadpixel.store.suppressions import suppress


@dataclass(frozen=True, slots=True)
class Recorded:
    message_id: str
    outcome: str  # hard, soft, complaint, duplicate, unknown message, other recipient
    suppressed: str | None = None  # the address put on the suppression list, if any


def report_key(message_id: str, raw: bytes) -> str:
    """Same report about the same message: same key, so a second delivery or read changes nothing."""
    return hashlib.sha256(message_id.encode() + b"\0" + raw).hexdigest()


def _matching(failures: tuple[Failure, ...], recipient: str | None) -> Failure | None:
    """The failure about this message's recipient (a report may list several addresses)."""
    if recipient is None:
        return failures[0] if len(failures) == 1 else None
    wanted = recipient.strip().lower()
    for failure in failures:
        if wanted in (failure.recipient, failure.original_recipient):
            return failure
    return None


def _insert(conn: Connection, row: dict[str, object]) -> bool:
    try:
        with conn.begin_nested():
            conn.execute(insert(bounces).values(**row))
    except IntegrityError:
        return False
    return True


def record(
    conn: Connection, report: Report, message_id: str, *, source: str, key: str, soft_limit: int, at: float
) -> Recorded:
    m = messages.c
    found = conn.execute(
        select(m.recipient, m.campaign_id, func.coalesce(m.sent_at, m.created_at)).where(m.id == message_id)
    ).first()
    if found is None:
        return Recorded(message_id, "unknown message")
    recipient, campaign_id, sent_at = found
    row = {"message_id": message_id, "at": at, "source": source, "report_key": key}
    if report.kind == "complaint":
        if not _insert(conn, {**row, "kind": "complaint", "reason": report.note}):
            return Recorded(message_id, "duplicate")
        conn.execute(
            update(messages)
            .where(m.id == message_id)
            .values(complained_at=func.coalesce(m.complained_at, at))
        )
        return Recorded(message_id, "complaint", _suppress(conn, recipient, "complaint", campaign_id))
    failure = _matching(report.failures, recipient)
    if failure is None:
        return Recorded(message_id, "other recipient")
    kind = "hard" if failure.hard else "soft"
    if not _insert(conn, {**row, "kind": kind, "status": failure.status, "reason": failure.diagnostic}):
        return Recorded(message_id, "duplicate")
    reason = " ".join(filter(None, (failure.status, failure.diagnostic))) or None
    summary = {"bounced_at": at, "bounce_reason": reason}
    if failure.hard:
        conn.execute(update(messages).where(m.id == message_id).values(bounce="hard", **summary))
        return Recorded(message_id, "hard", _suppress(conn, recipient, "hard-bounce", campaign_id))
    conn.execute(
        update(messages)
        .where(m.id == message_id)
        .values(soft_bounce_count=m.soft_bounce_count + 1, bounce=func.coalesce(m.bounce, "soft"), **summary)
    )
    if recipient is not None and _soft_streak(conn, recipient, sent_at, soft_limit):
        conn.execute(update(messages).where(m.id == message_id).values(bounce="hard"))
        return Recorded(message_id, "hard", _suppress(conn, recipient, "soft-bounces", campaign_id))
    return Recorded(message_id, "soft")


def _soft_streak(conn: Connection, recipient: str, sent_at: float, limit: int) -> bool:
    """Did the last ``limit`` messages to this address, up to this one, all soft-bounce, none opened or
    clicked by a person in between? Then the address counts as hard bounced."""
    m = messages.c
    recent = conn.execute(
        select(m.soft_bounce_count, m.human_open_count, m.human_click_count)
        .where(
            func.lower(m.recipient) == recipient.strip().lower(),
            m.status == "sent",
            func.coalesce(m.sent_at, m.created_at) <= sent_at,
        )
        .order_by(func.coalesce(m.sent_at, m.created_at).desc())
        .limit(limit)
    ).all()
    return len(recent) == limit and all(soft > 0 and not (opens or clicks) for soft, opens, clicks in recent)


def _suppress(conn: Connection, recipient: str | None, source: str, campaign_id: int | None) -> str | None:
    if recipient is None:
        return None
    suppress(conn, recipient, source, campaign_id)
    return recipient.strip().lower()
