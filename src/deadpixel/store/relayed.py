"""What the relay recorded per submitted message and recipient: claimed before sending, settled after.

A copy's row exists before the copy goes upstream and says ``sent`` only once the upstream took it, so a
resubmitted message (same account, Message-ID and content: see Submitted.key_for) reuses each recipient's
tracked message and skips copies already sent.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from deadpixel.errors import DeadpixelError
from deadpixel.store.links import save_links
from deadpixel.store.messages import campaign_id, create_message
from deadpixel.store.notices import EACH
from deadpixel.store.schema import links, relayed
from deadpixel.store.sending import mark_failed, mark_sent

# A copy still marked as being sent after this long was left behind by a relay that stopped mid-way.
IN_FLIGHT_SECONDS = 600.0


class InFlight(DeadpixelError):
    """The same message is being relayed to this recipient by another submission right now."""


@dataclass(frozen=True, slots=True)
class Claim:
    address: str  # as the client gave it in RCPT TO
    message_id: str | None  # the tracked message of this copy; None when it goes out untracked
    already_sent: bool  # an earlier submission got this copy to the upstream


def claim(
    conn: Connection,
    *,
    key: str,
    account: str,
    addresses: Sequence[str],
    campaign: str,
    subject: str | None,
    untracked: str | None,
    notify: bool = False,
) -> list[Claim]:
    """One claim per distinct recipient, creating the tracked messages of copies not seen before;
    ``notify`` asks for a read notice on each (else the campaign's mode applies)."""
    cid = campaign_id(conn, campaign, create=True)
    claims: list[Claim] = []
    seen: set[str] = set()
    for address in addresses:
        lowered = address.lower()
        if lowered in seen:
            continue
        seen.add(lowered)
        claims.append(
            _claim_one(conn, key, account, address, lowered, cid, campaign, subject, untracked, notify)
        )
    return claims


def _claim_one(
    conn: Connection,
    key: str,
    account: str,
    address: str,
    lowered: str,
    cid: int | None,
    campaign: str,
    subject: str | None,
    untracked: str | None,
    notify: bool = False,
) -> Claim:
    where = (relayed.c.message_key == key, relayed.c.recipient == lowered)
    columns = (relayed.c.message_id, relayed.c.status, relayed.c.updated_at)
    row = conn.execute(select(*columns).where(*where)).first()
    if row is not None:
        if row.status == "sending" and row.updated_at > time.time() - IN_FLIGHT_SECONDS:
            raise InFlight(address)
        if row.status != "sent":
            conn.execute(update(relayed).where(*where).values(status="sending", updated_at=time.time()))
        return Claim(address, row.message_id, row.status == "sent")
    message_id = None
    try:
        with conn.begin_nested():
            if untracked is None:
                message_id = create_message(
                    conn,
                    recipient=lowered,
                    subject=subject,
                    campaign=campaign,
                    status="draft",
                    notify=EACH if notify else None,
                )
            conn.execute(
                insert(relayed).values(
                    message_key=key, recipient=lowered, account=account, message_id=message_id,
                    campaign_id=cid, status="sending", untracked=untracked, updated_at=time.time(),
                )
            )  # fmt: skip
    except IntegrityError:
        raise InFlight(address) from None
    return Claim(address, message_id, False)


def replace_links(conn: Connection, message_id: str, urls: Sequence[str]) -> None:
    """A resubmitted copy's links, minted again from the same HTML, replace those of its first try."""
    conn.execute(delete(links).where(links.c.message_id == message_id))
    save_links(conn, [(message_id, urls)])


def settle(conn: Connection, key: str, claims: Sequence[Claim], *, sent: bool, at: float) -> None:
    """Record the upstream's answer for these copies (the tracked messages become sent or failed)."""
    if not claims:
        return
    ids = [c.message_id for c in claims if c.message_id is not None]
    if sent:
        mark_sent(conn, ids, at)
    else:
        mark_failed(conn, ids)
    conn.execute(
        update(relayed)
        .where(relayed.c.message_key == key, relayed.c.recipient.in_([c.address.lower() for c in claims]))
        .values(status="sent" if sent else "failed", updated_at=at)
    )
