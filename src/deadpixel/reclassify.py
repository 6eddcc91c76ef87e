"""``deadpixel reclassify``: rerun enrichment and verdicts over stored events with the current rules.

It sits above both sides on purpose: the store reads and writes the events (``deadpixel.store.maintenance``)
and knows nothing of how they are judged; enrichment judges and knows nothing of where events are kept.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from deadpixel.enrich.opens import OpenClassifier, apply_message_pattern
from deadpixel.events import ClickEvent, OpenEvent
from deadpixel.store import maintenance, rollups
from deadpixel.store.clicks import first_human_opens
from deadpixel.store.events import CLICK, OPEN, EventKind

CHUNK = maintenance.CHUNK


def reclassify(conn: Connection, classifier: OpenClassifier, kind: EventKind = OPEN) -> int:
    """Rerun enrichment and verdicts over every stored event of a kind; returns how many were rewritten.

    Events whose raw detail was purged by retention keep the verdict they had: there is nothing left to judge.
    The messages' counters of the kind are rebuilt from the new verdicts; after opens, the charts' rollups are
    emptied so they are rebuilt from the events.
    """
    if kind is CLICK:
        return _reclassify_clicks(conn, classifier)
    ids = maintenance.messages_with_events(conn, kind)
    rewritten = 0
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        sent_at = maintenance.send_times_of(conn, chunk)
        rows: list[dict[str, Any]] = []
        for event in maintenance.events_to_judge(conn, kind, chunk):
            raw = OpenEvent(
                event.message_id, event.at, event.ip, event.user_agent, event.method, event.purpose
            )
            fields = classifier.enrich(raw, sent_at.get(event.message_id))
            rows.append({"event_id": event.id, "message_id": event.message_id, "at": event.at, "ip": event.ip,
                         **fields})  # fmt: skip
        apply_message_pattern(rows)  # verdicts that take the message's other events into account
        maintenance.write_enrichment(conn, kind, rows)
        maintenance.rebuild_counters(conn, chunk, kind)
        rewritten += len(rows)
    if kind.chained:
        rollups.reset(conn)  # verdicts and clients of opens changed: the charts' rollups are rebuilt
    return rewritten


def _reclassify_clicks(conn: Connection, classifier: OpenClassifier) -> int:
    """Clicks by the click rules, a message at a time with all its clicks, so a burst or the hidden link
    judges its neighbours whichever came first; run after opens, whose verdicts say when a person first
    opened each message."""
    ids = maintenance.messages_with_events(conn, CLICK)
    rewritten = 0
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        sent_at = maintenance.send_times_of(conn, chunk)
        stored = maintenance.events_to_judge(conn, CLICK, chunk)
        events = [
            ClickEvent(e.message_id, e.link, e.at, e.ip, e.user_agent, e.method, e.purpose) for e in stored
        ]
        rows, _ = classifier.clicks.click_rows(events, sent_at, (), first_human_opens(conn, chunk))
        for row, event in zip(rows, stored, strict=True):
            row["event_id"] = event.id
        maintenance.write_enrichment(conn, CLICK, rows)
        maintenance.rebuild_counters(conn, chunk, CLICK)
        rewritten += len(rows)
    return rewritten
