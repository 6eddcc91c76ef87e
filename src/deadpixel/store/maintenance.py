"""Rewriting history: what reclassification reads and writes (``deadpixel.reclassify`` judges), rebuilt
counters, retention, and erasing a person; each for any event kind (``deadpixel.store.events``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, and_, bindparam, case, delete, func, or_, select, update

from deadpixel.events import HUMAN_KINDS, MACHINE_KINDS
from deadpixel.store import chains, contacts, rollups
from deadpixel.store.events import ENRICHED_COLUMNS, EVENT_KINDS, OPEN, EventKind
from deadpixel.store.schema import ab_waiting, campaign_recipients, clicks, messages, relayed, sent_html

CHUNK = 500


def rows_of(kind: EventKind, message_ids: Sequence[str]) -> Any:
    """The condition that picks the events of these messages: a chained kind follows each message's chain
    (opens have no index on message_id), the others use their index."""
    table = kind.table
    if kind.chained:
        return table.c.id.in_(select(chains.open_ids(message_ids).c.id))
    return table.c.message_id.in_(message_ids)


def rebuild_counters(conn: Connection, message_ids: Sequence[str], kind: EventKind = OPEN) -> None:
    """Recompute the messages' counters of a kind from its events, the source of truth."""
    c = kind.table.c

    def count(condition: Any) -> Any:
        return func.sum(case((condition, 1), else_=0))

    for start in range(0, len(message_ids), CHUNK):
        chunk = message_ids[start : start + CHUNK]
        totals = (
            select(
                c.message_id,
                func.count(),
                count(c.kind.in_(HUMAN_KINDS)),
                count(c.kind.in_(MACHINE_KINDS)),
                count(c.kind == "self"),
                func.min(c.at),
                func.max(c.at),
            )
            .where(rows_of(kind, chunk))
            .group_by(c.message_id)
        )
        found = {row[0]: row[1:] for row in conn.execute(totals)}
        none = (0, 0, 0, 0, None, None)
        conn.execute(
            _SET_COUNTERS[kind.name],
            [dict(zip(_COUNTERS, (mid, *found.get(mid, none)), strict=True)) for mid in chunk],
        )


_COUNTERS = ("mid", "n", "human", "machine", "own", "first", "last")


def _set_counters(kind: EventKind) -> Any:
    return (
        update(messages)
        .where(messages.c.id == bindparam("mid"))
        .values(
            {
                kind.counter(): bindparam("n"),
                kind.counter("human"): bindparam("human"),
                kind.counter("machine"): bindparam("machine"),
                kind.counter("self"): bindparam("own"),
                kind.first_at: bindparam("first"),
                kind.last_at: bindparam("last"),
            }
        )
    )


_SET_COUNTERS = {kind.name: _set_counters(kind) for kind in EVENT_KINDS}


def messages_with_events(conn: Connection, kind: EventKind) -> list[str]:
    """The ids of the messages whose events of a kind reclassification walks, in id order."""
    if kind.chained:  # no index on opens.message_id: every message, each following its chain
        return list(conn.execute(select(messages.c.id).order_by(messages.c.id)).scalars())
    column = kind.table.c.message_id
    return list(conn.execute(select(column).distinct().order_by(column)).scalars())


def send_times_of(conn: Connection, message_ids: Sequence[str]) -> dict[str, float]:
    """When each of these messages was sent (those never sent are left out): the clock verdicts trust."""
    query = select(messages.c.id, messages.c.sent_at).where(
        messages.c.id.in_(message_ids), messages.c.sent_at.is_not(None)
    )
    return {mid: sent for mid, sent in conn.execute(query)}


def events_to_judge(conn: Connection, kind: EventKind, message_ids: Sequence[str]) -> Sequence[Any]:
    """The events of these messages that reclassification can judge again, by message and time.

    Events whose raw detail was purged by retention keep the verdict they had: there is nothing left to judge.
    """
    c = kind.table.c
    query = (
        select(kind.table)
        .where(
            rows_of(kind, message_ids),
            or_(c.user_agent.is_not(None), c.ip.is_not(None), c.kind.is_(None)),
        )
        .order_by(c.message_id, c.at)
    )
    return conn.execute(query).all()


def _update_enrichment(kind: EventKind) -> Any:
    return (
        update(kind.table)
        .where(kind.table.c.id == bindparam("event_id"))
        .values({name: bindparam(name) for name in ENRICHED_COLUMNS})
    )


_UPDATE_ENRICHMENT = {kind.name: _update_enrichment(kind) for kind in EVENT_KINDS}


def write_enrichment(conn: Connection, kind: EventKind, rows: Sequence[dict[str, Any]]) -> None:
    """Store new enrichment on events: each row has the event's id (``event_id``) and every enriched
    column."""
    if rows:
        conn.execute(
            _UPDATE_ENRICHMENT[kind.name],
            [{"event_id": row["event_id"], **{name: row[name] for name in ENRICHED_COLUMNS}} for row in rows],
        )


def purge_raw_detail(
    conn: Connection, retention_days: int, now: float | None = None, kind: EventKind = OPEN
) -> int:
    """Drop the raw detail (``EventKind.retained``: address, user agent, region, city) of a kind's events
    older than the retention period.

    Counts and breakdowns (client, device, country, verdict, time) stay, so reports do not change.
    """
    if retention_days <= 0:
        return 0
    cutoff = (now if now is not None else time.time()) - retention_days * 86400
    table = kind.table
    result = conn.execute(
        update(table)
        .where(table.c.at < cutoff, or_(*(table.c[name].is_not(None) for name in kind.retained)))
        .values(dict.fromkeys(kind.retained))
    )
    return int(result.rowcount or 0)


def forget_recipient(conn: Connection, address: str) -> tuple[int, int]:
    """Erase every message to ``address`` (any case), every event (opens, clicks) of those messages, and the
    campaign and relay records of the address, and the address as a contact. (An unsubscribe on the
    suppression list stays: it is their wish.)"""
    contacts.delete_contact(conn, address)
    conn.execute(delete(campaign_recipients).where(campaign_recipients.c.address == address.strip().lower()))
    conn.execute(delete(relayed).where(relayed.c.recipient == address.strip().lower()))
    conn.execute(delete(ab_waiting).where(ab_waiting.c.address == address.strip().lower()))
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
        # The copy kept for the click map was this person's rendering (their name, their links): it goes.
        conn.execute(delete(sent_html).where(sent_html.c.message_id.in_(chunk)))
        conn.execute(delete(messages).where(and_(messages.c.id.in_(chunk))))
    return len(ids), erased_opens
