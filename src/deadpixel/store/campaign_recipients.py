"""Per-recipient state of a campaign: claimed before sending, settled after, so re-runs never send twice.

Claiming is a conditional write (an insert that fails on a duplicate key, or an update that matches only
the state the caller saw), so two runs of the same campaign at once cannot both take the same recipient.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from deadpixel.store.schema import campaign_recipients as cr
from deadpixel.store.schema import messages

RESENDABLE = ("failed", "pending")
UNCERTAIN = ("sending", "uncertain")


@dataclass(frozen=True, slots=True)
class Known:
    address: str
    line: int
    run_id: str
    message_id: str | None
    status: str
    unsubscribe_id: str | None = None


def known(conn: Connection, campaign_id: int, keys: Iterable[str]) -> dict[str, Known]:
    wanted = sorted(set(keys))
    found: dict[str, Known] = {}
    for start in range(0, len(wanted), 500):
        query = select(
            cr.c.address, cr.c.line, cr.c.run_id, cr.c.message_id, cr.c.status, cr.c.unsubscribe_id
        ).where(cr.c.campaign_id == campaign_id, cr.c.address.in_(wanted[start : start + 500]))
        found.update({row.address: Known(*row) for row in conn.execute(query)})
    return found


@dataclass(frozen=True, slots=True)
class Claim:
    address: str
    line: int
    message_id: str | None
    unsubscribe_id: str


def claim_new(conn: Connection, campaign_id: int, run_id: str, claims: Sequence[Claim]) -> bool:
    """Claim recipients no run has met yet, all in one statement; False (and nothing claimed) when another
    run took any of them meanwhile: the caller then claims them one by one."""
    if not claims:
        return False
    now = time.time()
    rows = [
        dict(campaign_id=campaign_id, address=c.address, line=c.line, run_id=run_id, message_id=c.message_id,
             status="sending", error=None, updated_at=now, unsubscribe_id=c.unsubscribe_id)
        for c in claims
    ]  # fmt: skip
    try:
        with conn.begin_nested():
            conn.execute(insert(cr), rows)
    except IntegrityError:
        return False
    return True


def claim(
    conn: Connection,
    campaign_id: int,
    key: str,
    *,
    line: int,
    run_id: str,
    message_id: str | None,
    status: str,
    error: str | None = None,
    previous: Known | None,
    unsubscribe_id: str | None = None,
) -> bool:
    """Record this run's intent for ``key``; False when another run took it meanwhile."""
    values = {
        "line": line, "run_id": run_id, "message_id": message_id, "status": status, "error": error,
        "updated_at": time.time(),
    }  # fmt: skip
    if unsubscribe_id is not None:
        values["unsubscribe_id"] = unsubscribe_id
    if previous is None:
        try:
            with conn.begin_nested():
                conn.execute(insert(cr).values(campaign_id=campaign_id, address=key, **values))
        except IntegrityError:
            return False
        return True
    result = conn.execute(
        update(cr)
        .where(
            cr.c.campaign_id == campaign_id,
            cr.c.address == key,
            cr.c.run_id == previous.run_id,
            cr.c.status == previous.status,
        )
        .values(**values)
    )
    return bool(result.rowcount)


def touch(conn: Connection, campaign_id: int, key: str, *, line: int, run_id: str) -> None:
    """Note that this run met ``key`` (at ``line``) without sending, so a later row with it is a duplicate."""
    conn.execute(
        update(cr)
        .where(cr.c.campaign_id == campaign_id, cr.c.address == key)
        .values(line=line, run_id=run_id)
    )


def drop_unsent_message(conn: Connection, message_id: str) -> None:
    """A failed attempt's message was never delivered: it goes, with its links, before the next attempt."""
    conn.execute(delete(messages).where(messages.c.id == message_id, messages.c.status != "sent"))


_settle = (
    update(cr)
    .where(cr.c.campaign_id == bindparam("cid"), cr.c.address == bindparam("key"))
    .values(status=bindparam("new_status"), error=bindparam("new_error"), updated_at=bindparam("at"))
)
_message_sent = (
    update(messages).where(messages.c.id == bindparam("mid")).values(status="sent", sent_at=bindparam("at"))
)
_message_failed = update(messages).where(messages.c.id == bindparam("mid")).values(status="failed")


@dataclass(frozen=True, slots=True)
class Outcome:
    key: str
    message_id: str | None
    status: str  # sent, failed, uncertain or pending
    error: str | None
    at: float


def settle(conn: Connection, campaign_id: int, outcomes: Sequence[Outcome]) -> None:
    """Record what SMTP said, for a batch of recipients, in the caller's transaction."""
    if not outcomes:
        return
    conn.execute(
        _settle,
        [
            {"cid": campaign_id, "key": o.key, "new_status": o.status, "new_error": o.error, "at": o.at}
            for o in outcomes
        ],
    )
    sent = [{"mid": o.message_id, "at": o.at} for o in outcomes if o.status == "sent" and o.message_id]
    if sent:
        conn.execute(_message_sent, sent)
    failed = [{"mid": o.message_id} for o in outcomes if o.status == "failed" and o.message_id]
    if failed:
        conn.execute(_message_failed, failed)


def counts(conn: Connection, campaign_id: int) -> dict[str, int]:
    from sqlalchemy import func

    query = select(cr.c.status, func.count()).where(cr.c.campaign_id == campaign_id).group_by(cr.c.status)
    return {status: int(n) for status, n in conn.execute(query)}
