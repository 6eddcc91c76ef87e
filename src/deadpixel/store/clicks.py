"""The write side of clicks: what the click writer commits for each batch.

Clicks get the same enrichment and verdicts as opens (``OpenClassifier``), and their counters sit on the
message row next to the open counters, updated in the same transaction as the events; the statements are
the ones every event kind shares (``deadpixel.store.writes``, by ``deadpixel.store.events.CLICK``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, insert

from deadpixel.events import ClickEvent
from deadpixel.store import notices, outbox
from deadpixel.store.driver import run
from deadpixel.store.events import CLICK
from deadpixel.store.maintenance import purge_raw_detail
from deadpixel.store.writes import (
    STORE_POSTGRES,
    RowBuilder,
    bump_counters_on_sqlite,
    counter_updates,
    encode_rows,
    existing_messages,
    notify_modes,
    send_times,
)

_insert_clicks = insert(CLICK.table)


def click_rows(
    builder: RowBuilder, events: Sequence[ClickEvent], sent_at: dict[str, float]
) -> list[dict[str, Any]]:
    """Enriched rows: the open classifier sees each click as the request it is, then the link is added."""
    rows = builder.rows([event.as_open() for event in events], sent_at)
    for row, event in zip(rows, events, strict=True):
        row["link"] = event.link
    return rows


def write_clicks(conn: Connection, events: Sequence[ClickEvent], builder: RowBuilder) -> int:
    """Insert a batch of clicks and bump the message counters, in the caller's transaction.

    Returns how many clicks were dropped because their message was erased meanwhile.
    """
    known = existing_messages(conn, (event.message_id for event in events), lock=True)
    kept = [event for event in events if event.message_id in known]
    if kept:
        rows = click_rows(builder, kept, send_times(known))
        if conn.dialect.name == "postgresql":
            run(conn, STORE_POSTGRES[CLICK.name], (encode_rows(rows),))
        else:
            conn.execute(_insert_clicks, rows)
            bump_counters_on_sqlite(conn, counter_updates(rows, CLICK), CLICK)
        outbox.enqueue(conn, CLICK.name, rows)  # webhook deliveries, in this same transaction
        flagged = notify_modes(known)
        if flagged:  # click notices, for messages that asked for read notices
            notices.record_clicks(conn, rows, flagged)
    return len(events) - len(kept)


def purge_click_detail(conn: Connection, retention_days: int, now: float | None = None) -> int:
    """Retention for clicks (``maintenance.purge_raw_detail`` for the click kind)."""
    return purge_raw_detail(conn, retention_days, now, CLICK)
