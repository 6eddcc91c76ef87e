"""``deadpixel bounces reclassify``: the current rules over every stored bounce, and the suppressions they no
longer justify lifted.

The rules that read a failure's reason improve; what was stored stays (status and diagnostic), so the
reasons can be worked out again. A suppression that a bounce added (source ``hard-bounce`` or
``soft-bounces``) is lifted when the address's stored bounces, read again, neither say the address is gone
nor make a run of recipient-side failures; one that a person or an unsubscribe added is never touched, nor
one whose bounces are no longer stored (``forget``), since then there is nothing to judge it by.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from sqlalchemy import Connection, and_, func, select, update

from deadpixel.bounces.reasons import Reason, classify, counts_toward_streak, suppresses
from deadpixel.store.schema import bounces, messages, suppressions
from deadpixel.store.suppressions import unsuppress

BOUNCE_SOURCES = ("hard-bounce", "soft-bounces")  # the suppressions a bounce added; only these are judged
CHUNK = 1000


@dataclass(frozen=True, slots=True)
class Lifted:
    address: str
    source: str  # hard-bounce or soft-bounces
    why: str


@dataclass(slots=True)
class Reclassified:
    reports: int = 0  # failure reports read
    changed: int = 0  # whose reason is not the one stored
    by_reason: Counter[str] = field(default_factory=Counter)
    lifted: list[Lifted] = field(default_factory=list)
    kept: int = 0  # bounce suppressions still justified (or with nothing stored to judge them by)

    def as_json(self) -> dict[str, object]:
        return {
            "reports": self.reports,
            "changed": self.changed,
            "by_reason": dict(self.by_reason.most_common()),
            "lifted": [{"address": x.address, "source": x.source, "why": x.why} for x in self.lifted],
            "kept": self.kept,
        }


@dataclass(frozen=True, slots=True)
class _Row:
    id: int
    message_id: str
    at: float
    kind: str
    status: str | None
    reason: Reason
    old_code: str | None
    old_status: str | None


def _failure_rows(conn: Connection) -> Iterator[_Row]:
    """Every stored failure report with its reason worked out again, in id order, a chunk at a time."""
    b = bounces.c
    after = -1
    while True:
        chunk = conn.execute(
            select(b.id, b.message_id, b.at, b.kind, b.status, b.reason, b.reason_code)
            .where(b.kind.in_(("hard", "soft")), b.id > after)
            .order_by(b.id)
            .limit(CHUNK)
        ).all()
        for row_id, message_id, at, kind, status, diagnostic, code in chunk:
            verdict = classify(status, diagnostic)
            yield _Row(row_id, message_id, at, kind, verdict.status, verdict.reason, code, status)
        if len(chunk) < CHUNK:
            return
        after = chunk[-1][0]


def reclassify(conn: Connection, soft_limit: int, *, dry_run: bool = False) -> Reclassified:
    """Work every stored failure's reason out again; lift the bounce suppressions no longer justified.
    With ``dry_run``, say what would change and change nothing. Running it twice changes nothing more."""
    done = Reclassified()
    latest: dict[str, _Row] = {}  # each message's latest failure: its summary's reason
    by_message: dict[str, list[_Row]] = {}
    for row in _failure_rows(conn):
        done.reports += 1
        done.by_reason[row.reason.value] += 1
        by_message.setdefault(row.message_id, []).append(row)
        held = latest.get(row.message_id)
        if held is None or (row.at, row.id) >= (held.at, held.id):
            latest[row.message_id] = row
        if (row.reason.value, row.status) != (row.old_code, row.old_status):
            done.changed += 1
            if not dry_run:
                conn.execute(
                    update(bounces)
                    .where(bounces.c.id == row.id)
                    .values(reason_code=row.reason.value, status=row.status)
                )
    if not dry_run:
        m = messages.c
        for message_id, row in latest.items():
            conn.execute(
                update(messages)
                .where(m.id == message_id, func.coalesce(m.bounce_reason_code, "") != row.reason.value)
                .values(bounce_reason_code=row.reason.value)
            )
    for address, source in conn.execute(
        select(suppressions.c.address, suppressions.c.source)
        .where(suppressions.c.source.in_(BOUNCE_SOURCES))
        .order_by(suppressions.c.address)
    ).all():
        why = _unjustified(conn, address, by_message, soft_limit)
        if why is None:
            done.kept += 1
            continue
        done.lifted.append(Lifted(address, source, why))
        if not dry_run:
            _lift(conn, address)
    return done


def _unjustified(
    conn: Connection, address: str, by_message: dict[str, list[_Row]], soft_limit: int
) -> str | None:
    """Why the address's stored bounces no longer justify suppressing it; None when they do, or when none
    is stored."""
    m = messages.c
    sent = conn.execute(
        select(m.id, m.human_open_count, m.human_click_count)
        .where(func.lower(m.recipient) == address, m.status == "sent")
        .order_by(func.coalesce(m.sent_at, m.created_at), m.id)
    ).all()
    failures = [row for message_id, _, _ in sent for row in by_message.get(message_id, [])]
    if not failures:
        return None
    if any(row.kind == "hard" and suppresses(row.reason) for row in failures):
        return None
    run = 0
    for message_id, opens, clicks in sent:
        counted = any(counts_toward_streak(row.reason) for row in by_message.get(message_id, []))
        run = run + 1 if counted and not (opens or clicks) else 0
        if run >= soft_limit:
            return None
    reasons = Counter(row.reason.value for row in failures)
    listed = ", ".join(f"{reason} x{n}" if n > 1 else reason for reason, n in reasons.most_common())
    return f"its bounces ({listed}) do not say the address is gone, nor make {soft_limit} in a row"


def _lift(conn: Connection, address: str) -> None:
    """Off the list; a message counted hard only for a run of soft failures counts as soft again."""
    unsuppress(conn, address)
    m = messages.c
    hard_report = select(bounces.c.id).where(bounces.c.message_id == m.id, bounces.c.kind == "hard").exists()
    conn.execute(
        update(messages)
        .where(and_(func.lower(m.recipient) == address, m.bounce == "hard", ~hard_report))
        .values(bounce="soft")
    )
