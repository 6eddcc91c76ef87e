"""Rewriting history: reclassify with improved rules, rebuild counters, retention, and erasing a person."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, and_, bindparam, case, delete, func, or_, select, update

from deadpixel.enrich.opens import ENRICHED_FIELDS, OpenClassifier, apply_message_pattern
from deadpixel.events import HUMAN_KINDS, MACHINE_KINDS, OpenEvent
from deadpixel.store import chains, rollups
from deadpixel.store.schema import campaign_recipients, clicks, messages, opens, relayed

CHUNK = 500


def rebuild_counters(conn: Connection, message_ids: Sequence[str]) -> None:
    """Recompute message counters from the events, the source of truth."""
    o = opens.c

    def count(condition: Any) -> Any:
        return func.sum(case((condition, 1), else_=0))

    for start in range(0, len(message_ids), CHUNK):
        chunk = message_ids[start : start + CHUNK]
        totals = (
            select(
                o.message_id,
                func.count(),
                count(o.kind.in_(HUMAN_KINDS)),
                count(o.kind.in_(MACHINE_KINDS)),
                count(o.kind == "self"),
                func.min(o.at),
                func.max(o.at),
            )
            .where(o.id.in_(select(chains.open_ids(chunk).c.id)))
            .group_by(o.message_id)
        )
        found = {row[0]: row[1:] for row in conn.execute(totals)}
        none = (0, 0, 0, 0, None, None)
        conn.execute(
            _set_counters,
            [dict(zip(_COUNTERS, (mid, *found.get(mid, none)), strict=True)) for mid in chunk],
        )


_COUNTERS = ("mid", "n", "human", "machine", "own", "first", "last")
_set_counters = (
    update(messages)
    .where(messages.c.id == bindparam("mid"))
    .values(
        open_count=bindparam("n"),
        human_open_count=bindparam("human"),
        machine_open_count=bindparam("machine"),
        self_open_count=bindparam("own"),
        first_open_at=bindparam("first"),
        last_open_at=bindparam("last"),
    )
)


_update_enrichment = (
    update(opens)
    .where(opens.c.id == bindparam("event_id"))
    .values({name: bindparam(name) for name in ENRICHED_FIELDS})
)


def reclassify(conn: Connection, classifier: OpenClassifier) -> int:
    """Rerun enrichment and verdicts over every stored open; returns how many were rewritten.

    Opens whose raw detail was purged by retention keep the verdict they had: there is nothing left to judge.
    """
    ids = list(conn.execute(select(messages.c.id).order_by(messages.c.id)).scalars())
    rewritten = 0
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        sent_at = dict(
            conn.execute(
                select(messages.c.id, messages.c.sent_at).where(
                    messages.c.id.in_(chunk), messages.c.sent_at.is_not(None)
                )
            ).all()
        )
        stored = conn.execute(
            select(opens)
            .where(
                opens.c.id.in_(select(chains.open_ids(chunk).c.id)),
                or_(opens.c.user_agent.is_not(None), opens.c.ip.is_not(None), opens.c.kind.is_(None)),
            )
            .order_by(opens.c.message_id, opens.c.at)
        ).all()
        rows = []
        for event in stored:
            raw = OpenEvent(
                event.message_id, event.at, event.ip, event.user_agent, event.method, event.purpose
            )
            fields = classifier.enrich(raw, sent_at.get(event.message_id))
            rows.append({"event_id": event.id, "message_id": event.message_id, "at": event.at, "ip": event.ip,
                         **fields})  # fmt: skip
        apply_message_pattern(rows)
        if rows:
            conn.execute(
                _update_enrichment, [{k: v for k, v in row.items() if k not in ("message_id", "at", "ip")}
                                     for row in rows],
            )  # fmt: skip
        rebuild_counters(conn, chunk)
        rewritten += len(rows)
    rollups.reset(conn)  # verdicts and clients changed: the charts' rollups are rebuilt from the events
    return rewritten


def purge_raw_detail(conn: Connection, retention_days: int, now: float | None = None) -> int:
    """Drop address, user agent, region and city of opens older than the retention period.

    Counts and breakdowns (client, device, country, verdict, time) stay, so reports do not change.
    """
    if retention_days <= 0:
        return 0
    cutoff = (now if now is not None else time.time()) - retention_days * 86400
    result = conn.execute(
        update(opens)
        .where(
            opens.c.at < cutoff,
            or_(
                opens.c.ip.is_not(None),
                opens.c.user_agent.is_not(None),
                opens.c.region.is_not(None),
                opens.c.city.is_not(None),
            ),
        )
        .values(ip=None, user_agent=None, region=None, city=None)
    )
    return int(result.rowcount or 0)


def forget_recipient(conn: Connection, address: str) -> tuple[int, int]:
    """Erase every message to ``address`` (any case), every event (opens, clicks) of those messages, and the
    campaign and relay records of the address. (An unsubscribe on the suppression list stays: it is their
    wish.)"""
    conn.execute(delete(campaign_recipients).where(campaign_recipients.c.address == address.strip().lower()))
    conn.execute(delete(relayed).where(relayed.c.recipient == address.strip().lower()))
    ids = list(
        conn.execute(
            select(messages.c.id).where(func.lower(messages.c.recipient) == address.strip().lower())
        ).scalars()
    )
    erased_opens = 0
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        erased_opens += rollups.delete_opens(conn, chunk)
        conn.execute(delete(clicks).where(clicks.c.message_id.in_(chunk)))  # links go with their message
        conn.execute(delete(messages).where(and_(messages.c.id.in_(chunk))))
    return len(ids), erased_opens
