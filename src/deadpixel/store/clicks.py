"""The write side of clicks: what the click writer commits for each batch.

Clicks are judged by rules of their own (``deadpixel.enrich.clicks``), some of which look at a click's
neighbours: the earlier clicks of the same messages and when a person first opened each. The store looks
those up and passes them to the judge given to the writer (it knows no rules); a new click can show earlier
ones to be a machine's, and those are relabelled in the same transaction, with their messages' counters
rebuilt from the events as ``reclassify`` does. Counters sit on the message row next to the open counters;
the statements are the ones every event kind shares (``deadpixel.store.writes``, by
``deadpixel.store.events.CLICK``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy import Connection, bindparam, func, insert, select, update

from deadpixel.events import HUMAN_KINDS, ClickEvent, StoredClick
from deadpixel.store import notices, outbox
from deadpixel.store.driver import run
from deadpixel.store.events import CLICK, OPEN
from deadpixel.store.maintenance import purge_raw_detail, rebuild_counters, rows_of
from deadpixel.store.schema import clicks, messages
from deadpixel.store.writes import (
    STORE_POSTGRES,
    bump_counters_on_sqlite,
    counter_updates,
    encode_rows,
    existing_messages,
    notify_modes,
    send_times,
)

_insert_clicks = insert(CLICK.table)


class ClickRowBuilder(Protocol):
    """Judges a batch of clicks (``deadpixel.enrich.clicks.ClickClassifier``)."""

    @property
    def window(self) -> float:
        """How many seconds apart two clicks can be and still change each other's verdict."""
        ...

    @property
    def settle(self) -> float:
        """Seconds a person's click waits before its webhook is due, so a neighbour can still revise it."""
        ...

    def addresses(self, events: Sequence[ClickEvent]) -> set[str]:
        """The events' addresses as they are stored: only earlier clicks from these are neighbours."""
        ...

    def click_rows(
        self,
        events: Sequence[ClickEvent],
        sent_at: Mapping[str, float],
        earlier: Sequence[StoredClick] = (),
        opened_at: Mapping[str, float] | None = None,
    ) -> tuple[list[dict[str, Any]], list[StoredClick]]: ...


EARLIER_LIMIT = 2000
"""The most earlier clicks a batch looks at: a flood on one message costs a batch no more than this."""


def earlier_clicks(
    conn: Connection, message_ids: Sequence[str], addresses: Iterable[str], since: float
) -> list[StoredClick]:
    """The stored clicks of these messages from these addresses (as stored) from ``since`` on, newest first,
    at most ``EARLIER_LIMIT`` (the index on message_id and at)."""
    c = clicks.c
    query = (
        select(c.id, c.message_id, c.link, c.at, c.ip, c.kind, c.reason, c.rule)
        .where(c.message_id.in_(sorted(set(message_ids))), c.ip.in_(sorted(addresses)), c.at >= since)
        .order_by(c.at.desc())
        .limit(EARLIER_LIMIT)
    )
    return [StoredClick(*row) for row in conn.execute(query)]


def first_human_opens(conn: Connection, message_ids: Sequence[str]) -> dict[str, float]:
    """When a person first opened each of these messages (those no person opened are left out)."""
    o = OPEN.table.c
    query = (
        select(o.message_id, func.min(o.at))
        .where(rows_of(OPEN, sorted(set(message_ids))), o.kind.in_(HUMAN_KINDS))
        .group_by(o.message_id)
    )
    return {mid: at for mid, at in conn.execute(query)}


def opened_by_someone(conn: Connection, message_ids: Sequence[str]) -> list[str]:
    """Which of these messages a person opened: only theirs need ``first_human_opens``'s walk of the chain."""
    m = messages.c
    query = select(m.id).where(m.id.in_(sorted(set(message_ids))), m.human_open_count > 0)
    return list(conn.execute(query).scalars())


_relabel = (
    update(clicks)
    .where(clicks.c.id == bindparam("click_id"))
    .values(kind=bindparam("kind"), reason=bindparam("reason"), rule=bindparam("rule"))
)


def relabel_clicks(conn: Connection, changed: Sequence[StoredClick]) -> None:
    """New verdicts on stored clicks; their messages' counters are rebuilt from the events."""
    if not changed:
        return
    conn.execute(
        _relabel,
        [{"click_id": c.id, "kind": c.kind, "reason": c.reason, "rule": c.rule} for c in changed],
    )
    rebuild_counters(conn, sorted({c.message_id for c in changed}), CLICK)
    outbox.revise(conn, CLICK.name, [c._asdict() for c in changed])
    notices.withdraw_clicks(conn, [c._asdict() for c in changed if c.kind not in HUMAN_KINDS])


def write_clicks(conn: Connection, events: Sequence[ClickEvent], builder: ClickRowBuilder) -> int:
    """Insert a batch of clicks and bump the message counters, in the caller's transaction; relabel earlier
    clicks the batch shows to be a machine's.

    Returns how many clicks were dropped because their message was erased meanwhile.
    """
    known = existing_messages(conn, (event.message_id for event in events), lock=True)
    kept = [event for event in events if event.message_id in known]
    if kept:
        ids = sorted({event.message_id for event in kept})
        addresses = builder.addresses(kept)
        since = min(event.at for event in kept) - builder.window
        earlier = earlier_clicks(conn, ids, addresses, since) if addresses else []
        opened = opened_by_someone(conn, ids)
        opened_at = first_human_opens(conn, opened) if opened else {}
        rows, changed = builder.click_rows(kept, send_times(known), earlier, opened_at)
        if conn.dialect.name == "postgresql":
            run(conn, STORE_POSTGRES[CLICK.name], (encode_rows(rows),))
        else:
            conn.execute(_insert_clicks, rows)
            bump_counters_on_sqlite(conn, counter_updates(rows, CLICK), CLICK)
        # Webhook deliveries, in this same transaction. A person's click is held a moment: a neighbour that
        # shows it to be a machine's (a burst, the hidden link) usually comes within seconds.
        people = [row for row in rows if row.get("kind") in HUMAN_KINDS]
        if len(people) < len(rows):
            outbox.enqueue(conn, CLICK.name, [row for row in rows if row.get("kind") not in HUMAN_KINDS])
        outbox.enqueue(conn, CLICK.name, people, held=builder.settle)
        flagged = notify_modes(known)
        if flagged:  # click notices for messages that asked for read notices, held like the webhooks
            notices.record_clicks(conn, rows, flagged, held=builder.settle)
        relabel_clicks(conn, changed)
    return len(events) - len(kept)


def purge_click_detail(conn: Connection, retention_days: int, now: float | None = None) -> int:
    """Retention for clicks (``maintenance.purge_raw_detail`` for the click kind)."""
    return purge_raw_detail(conn, retention_days, now, CLICK)
