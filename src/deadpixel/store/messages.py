"""Creating tracked messages and the campaigns that group them."""

from __future__ import annotations

import time

from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import IntegrityError

from deadpixel.security.tokens import new_message_id
from deadpixel.store import notices
from deadpixel.store.schema import campaigns, messages


def campaign_id(conn: Connection, name: str, *, create: bool = False) -> int | None:
    found = conn.execute(select(campaigns.c.id).where(campaigns.c.name == name)).scalar()
    if found is not None or not create:
        return None if found is None else int(found)
    try:
        with conn.begin_nested():
            return int(
                conn.execute(
                    insert(campaigns).values(name=name, created_at=time.time()).returning(campaigns.c.id)
                ).scalar_one()
            )
    except IntegrityError:  # created by someone else meanwhile
        return int(conn.execute(select(campaigns.c.id).where(campaigns.c.name == name)).scalar_one())


def create_message(
    conn: Connection,
    *,
    recipient: str | None,
    subject: str | None = None,
    campaign: str | None = None,
    sent_at: float | None = None,
    status: str = "sent",
    notify: int | None = None,
) -> str:
    """Insert a message and return its public id (random; retried in the astronomically rare collision).

    ``status`` is ``sent`` for hand-made pixels (the user sends them), ``draft`` for a message deadpixel is
    about to send: it becomes ``sent`` or ``failed`` when the SMTP server has answered. ``notify`` is the
    message's read-notice mode (``deadpixel.store.notices``); None takes its campaign's.
    """
    cid = campaign_id(conn, campaign, create=True) if campaign else None
    mode = notices.campaign_mode(conn, cid) if notify is None else notify
    for _ in range(5):
        message_id = new_message_id()
        try:
            with conn.begin_nested():
                conn.execute(
                    insert(messages).values(
                        id=message_id,
                        campaign_id=cid,
                        recipient=recipient,
                        subject=subject,
                        created_at=time.time(),
                        sent_at=sent_at,
                        status=status,
                        notify=mode,
                    )
                )
        except IntegrityError:
            continue
        return message_id
    raise RuntimeError("could not allocate a unique message id")
