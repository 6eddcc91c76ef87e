"""Recording a report about one message: the report row, the message's bounce summary, the suppression list.

Only the message's own recipient is ever suppressed, never an address the report names: a report can be
written by anyone who holds a bounce address, so what it says selects among the message's facts but cannot
add to them.

What suppresses is the failure's *reason*, not its being permanent: one failure suppresses only when it says
the address does not exist; a run of ``soft_limit`` failures suppresses only when each says something about
the recipient's side (reasons.counts_toward_streak). A failure that is the sender's own problem (DMARC,
a blocklist, a rate limit) is recorded, hard or soft, and suppresses nobody.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from deadpixel.bounces.parse import Failure, Report
from deadpixel.bounces.reasons import Reason, counts_toward_streak
from deadpixel.store.schema import bounces, messages
from deadpixel.store.suppressions import suppress

# The reasons whose failures, repeated, count toward the soft-bounce streak (as stored in reason_code).
STREAK_CODES: tuple[str, ...] = tuple(sorted(r.value for r in Reason if counts_toward_streak(r)))
OPT_OUT = "opt-out"  # a feedback report of this type is an unsubscribe, not a spam complaint


@dataclass(frozen=True, slots=True)
class Recorded:
    message_id: str
    # hard, soft, complaint, unsubscribe, duplicate, unknown message, other recipient
    outcome: str
    suppressed: str | None = None  # the address put on the suppression list, if any
    reason: str | None = None  # the failure's reason, for the log


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
        return _complaint(conn, report, row, recipient, campaign_id)
    failure = _matching(report.failures, recipient)
    if failure is None:
        return Recorded(message_id, "other recipient")
    kind = "hard" if failure.hard else "soft"
    code = failure.reason.value
    stored = {"kind": kind, "status": failure.status, "reason": failure.diagnostic, "reason_code": code}
    if not _insert(conn, {**row, **stored}):
        return Recorded(message_id, "duplicate")
    words = " ".join(filter(None, (failure.status, failure.diagnostic))) or None
    summary = {"bounced_at": at, "bounce_reason": words, "bounce_reason_code": code}
    this = update(messages).where(m.id == message_id)
    if failure.hard:
        conn.execute(this.values(bounce="hard", **summary))
        if failure.suppress:
            return Recorded(message_id, "hard", _suppress(conn, recipient, "hard-bounce", campaign_id), code)
    else:
        conn.execute(
            this.values(
                soft_bounce_count=m.soft_bounce_count + 1, bounce=func.coalesce(m.bounce, "soft"), **summary
            )
        )
    streak = counts_toward_streak(failure.reason) and recipient is not None
    if streak and soft_streak(conn, str(recipient), sent_at, soft_limit):
        conn.execute(this.values(bounce="hard"))
        return Recorded(message_id, "hard", _suppress(conn, recipient, "soft-bounces", campaign_id), code)
    return Recorded(message_id, kind, None, code)


def _complaint(
    conn: Connection, report: Report, row: dict[str, object], recipient: str | None, campaign_id: int | None
) -> Recorded:
    """A spam complaint marks the message and suppresses; an opt-out report is an unsubscribe only."""
    message_id = str(row["message_id"])
    opt_out = (report.feedback_type or "").lower() == OPT_OUT
    if not _insert(conn, {**row, "kind": OPT_OUT if opt_out else "complaint", "reason": report.note}):
        return Recorded(message_id, "duplicate")
    if opt_out:
        return Recorded(message_id, "unsubscribe", _suppress(conn, recipient, "opt-out-report", campaign_id))
    m = messages.c
    at = row["at"]
    conn.execute(
        update(messages).where(m.id == message_id).values(complained_at=func.coalesce(m.complained_at, at))
    )
    return Recorded(message_id, "complaint", _suppress(conn, recipient, "complaint", campaign_id))


def soft_streak(conn: Connection, recipient: str, sent_at: float, limit: int) -> bool:
    """Did the last ``limit`` messages to this address, up to this one, all fail for a recipient-side reason
    (reasons.counts_toward_streak), none opened or clicked by a person in between? Then the address counts
    as hard bounced. Reports stored without a reason (before reasons were kept) do not count."""
    m = messages.c
    recent = conn.execute(
        select(m.id, m.human_open_count, m.human_click_count)
        .where(
            func.lower(m.recipient) == recipient.strip().lower(),
            m.status == "sent",
            func.coalesce(m.sent_at, m.created_at) <= sent_at,
        )
        .order_by(func.coalesce(m.sent_at, m.created_at).desc())
        .limit(limit)
    ).all()
    if len(recent) < limit or any(opens or clicks for _, opens, clicks in recent):
        return False
    return len(_failed_for_the_recipient(conn, [message_id for message_id, _, _ in recent])) == limit


def _failed_for_the_recipient(conn: Connection, message_ids: Sequence[str]) -> set[str]:
    """Which of these messages have a failure report whose reason counts toward the streak."""
    b = bounces.c
    query = select(b.message_id).where(
        b.message_id.in_(list(message_ids)), b.kind.in_(("hard", "soft")), b.reason_code.in_(STREAK_CODES)
    )
    return set(conn.execute(query).scalars())


def _suppress(conn: Connection, recipient: str | None, source: str, campaign_id: int | None) -> str | None:
    if recipient is None:
        return None
    suppress(conn, recipient, source, campaign_id)
    return recipient.strip().lower()
