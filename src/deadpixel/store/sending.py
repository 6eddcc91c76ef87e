"""Message status as sending goes: draft before SMTP, then sent (with the send time) or failed."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, update

from deadpixel.store.schema import messages


def mark_sent(conn: Connection, message_ids: Sequence[str], at: float) -> None:
    """Accepted by the SMTP server at ``at``: the time the verdicts' timing rules measure from."""
    if message_ids:
        conn.execute(
            update(messages).where(messages.c.id.in_(list(message_ids))).values(status="sent", sent_at=at)
        )


def mark_failed(conn: Connection, message_ids: Sequence[str]) -> None:
    if message_ids:
        conn.execute(update(messages).where(messages.c.id.in_(list(message_ids))).values(status="failed"))
