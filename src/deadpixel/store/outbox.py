"""The webhook outbox's write side: the one call the event writers make for each batch they commit.

``enqueue`` runs inside the batch's own transaction, so a delivery row exists if and only if its event does:
an event committed is an event that will be delivered, whatever happens to the process or the receiver
afterwards. Which event kinds any webhook wants is cached per process and read again every
``REFRESH_SECONDS``, so while no webhook exists a batch pays one clock read and nothing else. The price is
that a webhook added on another process (or from the command line) starts receiving up to that many
seconds later. Delivery itself is ``deadpixel.hooks.deliver``'s job.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, insert, literal, select

from deadpixel.store.schema import webhook_deliveries, webhooks

REFRESH_SECONDS = 2.0
PENDING = "pending"
# What a delivery tells about each event; the deliverer adds campaign, recipient and link URL.
EVENT_FIELDS = ("message_id", "at", "kind", "reason", "client", "device", "os", "country")

_wanted_kinds: frozenset[str] = frozenset()
_checked_at = float("-inf")
_lock = threading.Lock()


def forget_cache() -> None:
    """Read the webhooks again on the next batch (after this process adds or removes one)."""
    global _checked_at
    with _lock:
        _checked_at = float("-inf")


def wanted_kinds(conn: Connection) -> frozenset[str]:
    """The event kinds at least one webhook subscribes to, read at most every REFRESH_SECONDS."""
    global _wanted_kinds, _checked_at
    now = time.monotonic()
    if now - _checked_at < REFRESH_SECONDS:
        return _wanted_kinds
    kinds: set[str] = set()
    for on_open, on_click in conn.execute(select(webhooks.c.on_open, webhooks.c.on_click).distinct()):
        if on_open:
            kinds.add("open")
        if on_click:
            kinds.add("click")
    with _lock:
        _wanted_kinds, _checked_at = frozenset(kinds), now
    return _wanted_kinds


def _fan_out(event: str) -> Any:
    """One delivery per subscribed webhook for one event: INSERT ... SELECT over the webhooks table, so a
    webhook removed since the cache was read gets nothing, and one added since gets its share."""
    subscribed = webhooks.c.on_open if event == "open" else webhooks.c.on_click
    rows = select(
        webhooks.c.id,
        bindparam("event_id"),
        literal(event),
        bindparam("payload"),
        bindparam("created_at"),
        literal(PENDING),
        literal(0),
        bindparam("created_at"),
    ).where(subscribed.is_(True))
    columns = ["webhook_id", "event_id", "event", "payload", "created_at", "status", "attempts"]
    return insert(webhook_deliveries).from_select([*columns, "next_attempt_at"], rows)


_FAN_OUT = {"open": _fan_out("open"), "click": _fan_out("click")}


def enqueue(conn: Connection, event: str, rows: Sequence[dict[str, Any]]) -> None:
    """Add deliveries for these stored event rows (``open`` or ``click``), in the caller's transaction."""
    if not rows or event not in wanted_kinds(conn):
        return
    now = time.time()
    params = []
    for row in rows:
        data = {name: row.get(name) for name in EVENT_FIELDS}
        if event == "click":
            data["link"] = row.get("link")
        params.append({"event_id": uuid.uuid4().hex, "payload": json.dumps(data), "created_at": now})
    conn.execute(_FAN_OUT[event], params)
