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
from typing import Any

from sqlalchemy import Connection, bindparam, func, select, update

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
    changed: list[dict[str, object]] = []
    for row in _failure_rows(conn):
        done.reports += 1
        done.by_reason[row.reason.value] += 1
        by_message.setdefault(row.message_id, []).append(row)
        held = latest.get(row.message_id)
        if held is None or (row.at, row.id) >= (held.at, held.id):
            latest[row.message_id] = row
        if (row.reason.value, row.status) != (row.old_code, row.old_status):
            changed.append({"row_id": row.id, "code": row.reason.value, "new_status": row.status})
    done.changed = len(changed)
    if not dry_run:
        b, m = bounces.c, messages.c
        _in_batches(
            conn,
            update(bounces)
            .where(b.id == bindparam("row_id"))
            .values(reason_code=bindparam("code"), status=bindparam("new_status")),
            changed,
        )
        summaries: list[dict[str, object]] = [
            {"mid": k, "code": row.reason.value} for k, row in latest.items()
        ]
        summary = (
            update(messages).where(m.id == bindparam("mid")).values(bounce_reason_code=bindparam("code"))
        )
        _in_batches(conn, summary, summaries)
    judged = dict(
        conn.execute(
            select(suppressions.c.address, suppressions.c.source)
            .where(suppressions.c.source.in_(BOUNCE_SOURCES))
            .order_by(suppressions.c.address)
        ).all()
    )
    sent = _sent_to(conn, set(judged))
    for address, source in judged.items():
        why = _unjustified(sent.get(address, []), by_message, soft_limit)
        if why is None:
            done.kept += 1
            continue
        done.lifted.append(Lifted(address, source, why))
        if not dry_run:
            _lift(conn, address, [message_id for message_id, _ in sent.get(address, [])])
    return done


def _in_batches(conn: Connection, statement: Any, rows: list[dict[str, object]]) -> None:
    for start in range(0, len(rows), CHUNK):
        conn.execute(statement, rows[start : start + CHUNK])


Sent = tuple[str, bool]  # a sent message's id, and whether a person opened or clicked it


def _sent_to(conn: Connection, addresses: set[str]) -> dict[str, list[Sent]]:
    """The sent messages to each of these addresses, oldest first: one pass over the messages."""
    m = messages.c
    found: dict[str, list[Sent]] = {}
    if not addresses:
        return found
    query = (
        select(m.id, func.lower(m.recipient), m.human_open_count + m.human_click_count)
        .where(m.status == "sent", m.recipient.is_not(None))
        .order_by(func.coalesce(m.sent_at, m.created_at), m.id)
        .execution_options(yield_per=CHUNK)
    )
    for message_id, address, read in conn.execute(query):
        if address in addresses:
            found.setdefault(address, []).append((message_id, bool(read)))
    return found


def _unjustified(sent: list[Sent], by_message: dict[str, list[_Row]], soft_limit: int) -> str | None:
    """Why an address's stored bounces no longer justify suppressing it; None when they do, or when none
    is stored."""
    failures = [row for message_id, _ in sent for row in by_message.get(message_id, [])]
    if not failures:
        return None
    if any(row.kind == "hard" and suppresses(row.reason) for row in failures):
        return None
    run = 0
    for message_id, read in sent:
        counted = any(counts_toward_streak(row.reason) for row in by_message.get(message_id, []))
        run = run + 1 if counted and not read else 0
        if run >= soft_limit:
            return None
    reasons = Counter(row.reason.value for row in failures)
    listed = ", ".join(f"{reason} x{n}" if n > 1 else reason for reason, n in reasons.most_common())
    return f"its bounces ({listed}) do not say the address is gone, nor make {soft_limit} in a row"


def _lift(conn: Connection, address: str, message_ids: list[str]) -> None:
    """Off the list; a message counted hard only for a run of soft failures counts as soft again."""
    unsuppress(conn, address)
    m = messages.c
    hard_report = select(bounces.c.id).where(bounces.c.message_id == m.id, bounces.c.kind == "hard").exists()
    for start in range(0, len(message_ids), CHUNK):
        conn.execute(
            update(messages)
            .where(m.id.in_(message_ids[start : start + CHUNK]), m.bounce == "hard", ~hard_report)
            .values(bounce="soft")
        )
