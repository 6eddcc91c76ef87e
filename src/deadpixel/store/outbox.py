"""The webhook outbox's write side: the one call the event writers make for each batch they commit.

``enqueue`` runs inside the batch's own transaction, so a delivery row exists if and only if its event does:
an event committed is an event that will be delivered, whatever happens to the process or the receiver
afterwards. Which event kinds any webhook wants is cached per process and read again every
``REFRESH_SECONDS``, so while no webhook exists a batch pays one clock read and nothing else. The price is
that a webhook added on another process (or from the command line) starts receiving up to that many
seconds later, and one removed there may still be written rows for that long (the deliverer drops them).
Delivery itself is ``deadpixel.hooks.deliver``'s job.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update

from deadpixel.store.driver import execute_many
from deadpixel.store.schema import webhook_deliveries, webhooks

REFRESH_SECONDS = 2.0
PENDING = "pending"
# What a delivery tells about each event; the deliverer adds campaign, recipient and link URL.
EVENT_FIELDS = ("message_id", "at", "kind", "reason", "client", "device", "os", "country")

_subscribers: dict[str, tuple[int, ...]] = {}
_checked_at = float("-inf")
_lock = threading.Lock()
_insert = insert(webhook_deliveries)
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_UNSET = dict.fromkeys(
    ("lease_until", "lease_owner", "last_attempt_at", "last_status", "last_error", "target")
)


def forget_cache() -> None:
    """Read the webhooks again on the next batch (after this process adds or removes one)."""
    global _checked_at
    with _lock:
        _checked_at = float("-inf")


def subscribers(conn: Connection, event: str) -> tuple[int, ...]:
    """The ids of the webhooks that receive this kind of event, read at most every REFRESH_SECONDS."""
    global _subscribers, _checked_at
    now = time.monotonic()
    if now - _checked_at >= REFRESH_SECONDS:
        found: dict[str, list[int]] = {"open": [], "click": []}
        for webhook_id, on_open, on_click in conn.execute(
            select(webhooks.c.id, webhooks.c.on_open, webhooks.c.on_click).order_by(webhooks.c.id)
        ):
            if on_open:
                found["open"].append(webhook_id)
            if on_click:
                found["click"].append(webhook_id)
        with _lock:
            _subscribers = {kind: tuple(ids) for kind, ids in found.items()}
            _checked_at = now
    return _subscribers.get(event, ())


# PostgreSQL: the whole batch as one JSON document, unpacked by the server. An executemany costs a round
# trip per row, and text arrays are escaped in Python element by element; one JSON string is neither.
_FROM_JSON = (
    "INSERT INTO webhook_deliveries (webhook_id, event_id, event, payload, created_at, status, attempts,"
    " next_attempt_at) SELECT r.w, r.e, %(event)s, r.p::text, %(now)s, 'pending', 0, %(due)s"
    " FROM jsonb_to_recordset(%(rows)s::jsonb) AS r(w integer, e text, p jsonb)"
)


def enqueue(conn: Connection, event: str, rows: Sequence[dict[str, Any]], held: float = 0.0) -> None:
    """Add deliveries for these stored event rows (``open`` or ``click``), in the caller's transaction.

    One statement for the batch: on PostgreSQL an INSERT from one JSON document, on SQLite the driver's
    executemany. An event's id is a random prefix drawn once per batch and the event's place in it: unique
    without a random draw per event. A webhook removed since the cache was read may still get rows here;
    they have no webhook to go to, and the deliverer deletes them. ``held``: seconds before the rows are
    due, so that a later event can still revise them (``revise``).
    """
    if not rows:
        return
    targets = subscribers(conn, event)
    if not targets:
        return
    prefix = os.urandom(8).hex()
    fields = EVENT_FIELDS if event == "open" else (*EVENT_FIELDS, "link")
    now = time.time()
    due = now + held
    postgres = conn.dialect.name == "postgresql"
    deliveries: list[dict[str, Any]] = []
    for number, row in enumerate(rows):
        event_id = f"{prefix}{number:016x}"
        data = {name: row.get(name) for name in fields}
        if postgres:
            deliveries.extend({"w": webhook_id, "e": event_id, "p": data} for webhook_id in targets)
            continue
        payload = _encode(data)
        deliveries.extend(
            {"webhook_id": webhook_id, "event_id": event_id, "event": event, "payload": payload,
             "created_at": now, "status": PENDING, "attempts": 0, "next_attempt_at": due, **_UNSET}
            for webhook_id in targets
        )  # fmt: skip
    if postgres:
        values = {"event": event, "now": now, "due": due, "rows": _encode(deliveries)}
        conn.exec_driver_sql(_FROM_JSON, values)
        return

    execute_many(conn, _insert, deliveries)


REVISE_LOOKBACK = 600.0  # seconds: how old a pending delivery a revision looks for


def pending_for(
    conn: Connection, event: str, changed: Sequence[dict[str, Any]], *, webhook_id: int | None = None
) -> list[tuple[int, dict[str, Any], dict[str, Any]]]:
    """The deliveries not yet sent of events whose verdict changed: (delivery id, payload, the changed event).

    Events are matched by message, time and link (the payload names no row id); only pending rows of the
    last ``REVISE_LOOKBACK`` seconds are read, a handful while nobody floods a message. ``webhook_id``: only
    that receiver's rows (read notices have their own)."""
    wanted = {(c["message_id"], c["at"], c.get("link")): c for c in changed}
    d = webhook_deliveries.c
    query = select(d.id, d.payload).where(
        d.event == event, d.status == PENDING, d.created_at >= time.time() - REVISE_LOOKBACK
    )
    if webhook_id is not None:
        query = query.where(d.webhook_id == webhook_id)
    found = []
    for delivery_id, payload in conn.execute(query):
        data = json.loads(payload)
        match = wanted.get((data.get("message_id"), data.get("at"), data.get("link")))
        if match is not None:
            found.append((delivery_id, data, match))
    return found


def revise(conn: Connection, event: str, changed: Sequence[dict[str, Any]]) -> int:
    """A stored event's verdict changed: its deliveries not yet sent carry the new ``kind`` and ``reason``.
    Returns how many deliveries were rewritten."""
    if not changed or not subscribers(conn, event):
        return 0
    updates = [
        {
            "delivery_id": delivery_id,
            "new_payload": _encode({**data, "kind": c["kind"], "reason": c["reason"]}),
        }
        for delivery_id, data, c in pending_for(conn, event, changed)
    ]
    if updates:
        execute_many(conn, _revise, updates)
    return len(updates)


_revise = (
    update(webhook_deliveries)
    .where(webhook_deliveries.c.id == bindparam("delivery_id"))
    .values(payload=bindparam("new_payload"))
)
