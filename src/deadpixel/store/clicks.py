"""The write side of clicks: what the click writer commits for each batch, mirroring opens.

Clicks get the same enrichment and verdicts as opens (``OpenClassifier``), and their counters sit on the
message row next to the open counters, updated in the same transaction as the events.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, case, func, insert, or_, select, update

from deadpixel.enrich.opens import ENRICHED_FIELDS, OpenClassifier, apply_message_pattern
from deadpixel.events import HUMAN_KINDS, MACHINE_KINDS, ClickEvent, OpenEvent
from deadpixel.store import outbox
from deadpixel.store.driver import run
from deadpixel.store.schema import clicks, messages
from deadpixel.store.writes import RowBuilder, encode_rows, existing_messages, postgres_batch_sql, send_times


def _earlier(column: Any, param: str) -> Any:
    return case(((column.is_(None)) | (column > bindparam(param)), bindparam(param)), else_=column)


def _later(column: Any, param: str) -> Any:
    return case(((column.is_(None)) | (column < bindparam(param)), bindparam(param)), else_=column)


CHUNK = 500
_insert_clicks = insert(clicks)
_STORE_POSTGRES = postgres_batch_sql(clicks, "click")
_bump_click_counters = (
    update(messages)
    .where(messages.c.id == bindparam("mid"))
    .values(
        click_count=messages.c.click_count + bindparam("n"),
        human_click_count=messages.c.human_click_count + bindparam("human"),
        machine_click_count=messages.c.machine_click_count + bindparam("machine"),
        self_click_count=messages.c.self_click_count + bindparam("own"),
        first_click_at=_earlier(messages.c.first_click_at, "first"),
        last_click_at=_later(messages.c.last_click_at, "last"),
    )
)


def click_counter_updates(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    per_message: dict[str, dict[str, Any]] = {}
    for row in rows:
        at, kind = row["at"], row.get("kind")
        entry = per_message.setdefault(
            row["message_id"],
            {"mid": row["message_id"], "n": 0, "human": 0, "machine": 0, "own": 0, "first": at, "last": at},
        )
        entry["n"] += 1
        entry["human"] += kind in HUMAN_KINDS
        entry["machine"] += kind in MACHINE_KINDS
        entry["own"] += kind == "self"
        entry["first"] = min(entry["first"], at)
        entry["last"] = max(entry["last"], at)
    # In message id order, the order the batch locked them in.
    return [per_message[mid] for mid in sorted(per_message)]


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
            run(conn, _STORE_POSTGRES, (encode_rows(rows),))
        else:
            conn.execute(_insert_clicks, rows)
            conn.execute(_bump_click_counters, click_counter_updates(rows))
        outbox.enqueue(conn, "click", rows)  # webhook deliveries, in this same transaction
    return len(events) - len(kept)


def rebuild_click_counters(conn: Connection, message_ids: Sequence[str]) -> None:
    """Recompute the click counters of these messages from the clicks, the source of truth."""

    def count(*conditions: Any) -> Any:
        return (
            select(func.count())
            .select_from(clicks)
            .where(clicks.c.message_id == messages.c.id, *conditions)
            .scalar_subquery()
        )

    def edge(aggregate: Any) -> Any:
        return select(aggregate(clicks.c.at)).where(clicks.c.message_id == messages.c.id).scalar_subquery()

    for start in range(0, len(message_ids), CHUNK):
        conn.execute(
            update(messages)
            .where(messages.c.id.in_(message_ids[start : start + CHUNK]))
            .values(
                click_count=count(),
                human_click_count=count(clicks.c.kind.in_(HUMAN_KINDS)),
                machine_click_count=count(clicks.c.kind.in_(MACHINE_KINDS)),
                self_click_count=count(clicks.c.kind == "self"),
                first_click_at=edge(func.min),
                last_click_at=edge(func.max),
            )
        )


_update_enrichment = (
    update(clicks)
    .where(clicks.c.id == bindparam("event_id"))
    .values({name: bindparam(name) for name in ENRICHED_FIELDS})
)


def reclassify_clicks(conn: Connection, classifier: OpenClassifier) -> int:
    """Rerun enrichment and verdicts over every stored click, as ``deadpixel reclassify`` does for opens."""
    ids = list(conn.execute(select(clicks.c.message_id).distinct().order_by(clicks.c.message_id)).scalars())
    rewritten = 0
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        sent_at = {
            mid: sent
            for mid, sent in conn.execute(
                select(messages.c.id, messages.c.sent_at).where(messages.c.id.in_(chunk))
            )
            if sent is not None
        }
        stored = conn.execute(
            select(clicks)
            .where(
                clicks.c.message_id.in_(chunk),
                or_(clicks.c.user_agent.is_not(None), clicks.c.ip.is_not(None), clicks.c.kind.is_(None)),
            )
            .order_by(clicks.c.message_id, clicks.c.at)
        ).all()
        rows = []
        for click in stored:
            event = OpenEvent(
                click.message_id, click.at, click.ip, click.user_agent, click.method, click.purpose
            )
            fields = classifier.enrich(event, sent_at.get(click.message_id))
            rows.append({"event_id": click.id, "message_id": click.message_id, "at": click.at, "ip": click.ip,
                         **fields})  # fmt: skip
        apply_message_pattern(rows)
        if rows:
            conn.execute(
                _update_enrichment,
                [{k: v for k, v in row.items() if k not in ("message_id", "at", "ip")} for row in rows],
            )
        rebuild_click_counters(conn, chunk)
        rewritten += len(rows)
    return rewritten


def purge_click_detail(conn: Connection, retention_days: int, now: float | None = None) -> int:
    """Retention for clicks: drop address, user agent, region and city of clicks older than the period."""
    if retention_days <= 0:
        return 0
    cutoff = (now if now is not None else time.time()) - retention_days * 86400
    result = conn.execute(
        update(clicks)
        .where(
            clicks.c.at < cutoff,
            or_(
                clicks.c.ip.is_not(None),
                clicks.c.user_agent.is_not(None),
                clicks.c.region.is_not(None),
                clicks.c.city.is_not(None),
            ),
        )
        .values(ip=None, user_agent=None, region=None, city=None)
    )
    return int(result.rowcount or 0)
