"""The write side of the store: what the ingest writer commits for each batch of events."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from sqlalchemy import Connection, bindparam, case, insert, update

from deadpixel.store.schema import messages, opens


class OpenEvent(NamedTuple):
    """One pixel fetch, as the hot path saw it."""

    message_id: str
    at: float
    ip: str | None
    user_agent: str | None
    method: str


_insert_opens = insert(opens)

# One UPDATE per message per batch, not per event: a batch of 2,000 opens on 50 messages is 50 updates.
_bump_counters = (
    update(messages)
    .where(messages.c.id == bindparam("mid"))
    .values(
        open_count=messages.c.open_count + bindparam("n"),
        first_open_at=case(
            (
                (messages.c.first_open_at.is_(None)) | (messages.c.first_open_at > bindparam("first")),
                bindparam("first"),
            ),
            else_=messages.c.first_open_at,
        ),
        last_open_at=case(
            (
                (messages.c.last_open_at.is_(None)) | (messages.c.last_open_at < bindparam("last")),
                bindparam("last"),
            ),
            else_=messages.c.last_open_at,
        ),
    )
)


def write_opens(conn: Connection, events: Sequence[OpenEvent]) -> None:
    """Insert a batch of opens and bump the message counters, in the caller's transaction."""
    if not events:
        return
    conn.execute(_insert_opens, [event._asdict() for event in events])
    per_message: dict[str, list[float]] = {}
    for event in events:
        entry = per_message.get(event.message_id)
        if entry is None:
            per_message[event.message_id] = [1, event.at, event.at]
        else:
            entry[0] += 1
            entry[1] = min(entry[1], event.at)
            entry[2] = max(entry[2], event.at)
    conn.execute(
        _bump_counters,
        [
            {"mid": mid, "n": int(n), "first": first, "last": last}
            for mid, (n, first, last) in sorted(per_message.items())
        ],
    )
