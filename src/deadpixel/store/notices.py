"""Read notices' write side: the first human open of a message that asked for a notice, marked once, and
its notice rows put in the webhook outbox in the writer's own transaction.

A message's ``notify`` mode is ``EACH`` (a notice on its first human open), ``DIGEST`` (the read goes into
its campaign's daily digest) or ``OFF``. The first human open is the open that first makes the message
human-opened, the same fact ``human_open_count`` counts; it is marked on the message (``read_notice_at``)
by an UPDATE that only an unmarked message passes, so a second open, a replayed batch, another server or a
later reclassification never makes a second notice. A notice is one outbox row per channel (``email``,
``url``, with ``webhook_id`` 0): where each goes, and whether the channel is configured at all, is decided
at delivery (``deadpixel.hooks.notify``), so a notice never waits on settings here and the hot path reads
none. Nothing here runs for a batch without a flagged message.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, and_, delete, insert, select, update

from deadpixel.events import HUMAN_KINDS
from deadpixel.store import outbox
from deadpixel.store.schema import campaigns, messages, notify_settings, webhook_deliveries

OFF, EACH, DIGEST = 0, 1, 2
MODES = {"off": OFF, "each": EACH, "digest": DIGEST}
CHANNELS = ("email", "url")
NOTICE_WEBHOOK = 0  # the webhook_id of a notice row: no webhook has it (ids start at 1)
DIGEST_PERIOD = 86400.0
DIGEST_MAX_READS = 500  # reads named in one digest; more are counted, not listed
SETTING_NAMES = ("email", "url", "format")
SETTING_MAX = 2048
# What a notice tells about the open or click: who (the message's recipient and subject are read at delivery,
# so an erased message tells nothing), when, on what client and from where, as far as the IP mode kept it.
NOTICE_FIELDS = (
    "message_id", "at", "kind", "client", "device", "os", "country", "region", "city", "network_owner", "ip",
)  # fmt: skip
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _first_human(rows: Sequence[dict[str, Any]], flagged: Mapping[str, int]) -> dict[str, dict[str, Any]]:
    """Each flagged message's earliest human row in the batch."""
    first: dict[str, dict[str, Any]] = {}
    for row in rows:
        mid = row["message_id"]
        if mid in flagged and row.get("kind") in HUMAN_KINDS:
            seen = first.get(mid)
            if seen is None or row["at"] < seen["at"]:
                first[mid] = row
    return first


def record_reads(conn: Connection, rows: Sequence[dict[str, Any]], flagged: Mapping[str, int]) -> int:
    """Mark the first human open of each flagged message (``{message id: mode}``) in this batch of stored
    opens, and queue a notice for those in ``EACH`` mode; returns how many notices were queued."""
    queued = []
    for mid, row in sorted(_first_human(rows, flagged).items()):
        marked = conn.execute(
            update(messages)
            .where(messages.c.id == mid, messages.c.read_notice_at.is_(None))
            .values(read_notice_at=row["at"])
        ).rowcount
        if marked == 1 and flagged[mid] == EACH:
            queued.append(row)
    enqueue(conn, "read", [{name: row.get(name) for name in NOTICE_FIELDS} for row in queued])
    return len(queued)


def record_clicks(
    conn: Connection, rows: Sequence[dict[str, Any]], flagged: Mapping[str, int], held: float = 0.0
) -> int:
    """Queue a notice for every human click on a message in ``EACH`` mode; whether click notices are
    wanted (``DEADPIXEL_NOTIFY_CLICKS``) is decided at delivery, like the channels. ``held``: seconds the
    notice waits, so a later click that shows this one to be a machine's can withdraw it first."""
    wanted = [
        {**{name: row.get(name) for name in NOTICE_FIELDS}, "link": row.get("link")}
        for row in rows
        if flagged.get(row["message_id"]) == EACH and row.get("kind") in HUMAN_KINDS
    ]
    enqueue(conn, "click", wanted, held)
    return len(wanted)


def withdraw_clicks(conn: Connection, machine: Sequence[dict[str, Any]]) -> int:
    """Clicks now judged a machine's: their click notices not yet sent are finished as ``skipped``, found
    the way webhook deliveries are revised (``outbox.pending_for``). Returns how many were withdrawn."""
    if not machine:
        return 0
    ids = [
        delivery_id
        for delivery_id, _, _ in outbox.pending_for(conn, "click", machine, webhook_id=NOTICE_WEBHOOK)
    ]
    if ids:
        d = webhook_deliveries.c
        conn.execute(update(webhook_deliveries).where(d.id.in_(ids)).values(status="skipped"))
    return len(ids)


def enqueue(conn: Connection, event: str, payloads: Sequence[dict[str, Any]], held: float = 0.0) -> None:
    """One outbox row per notice and channel, in the caller's transaction, due ``held`` seconds from now."""
    if not payloads:
        return
    now = time.time()
    prefix = os.urandom(8).hex()
    conn.execute(
        insert(webhook_deliveries),
        [
            {"webhook_id": NOTICE_WEBHOOK, "event_id": f"{prefix}{number:016x}", "event": event,
             "payload": _encode(payload), "created_at": now, "status": "pending", "attempts": 0,
             "next_attempt_at": now + held, "target": channel}
            for number, payload in enumerate(payloads)
            for channel in CHANNELS
        ],
    )  # fmt: skip


def flagged_messages(conn: Connection, message_ids: Sequence[str]) -> dict[str, int]:
    """The notify mode of those of these messages that have one (the click writer's lookup)."""
    if not message_ids:
        return {}
    query = select(messages.c.id, messages.c.notify).where(
        messages.c.id.in_(sorted(set(message_ids))), messages.c.notify != OFF
    )
    return {mid: int(mode) for mid, mode in conn.execute(query)}


def campaign_mode(conn: Connection, campaign_id: int | None) -> int:
    """The notify mode new messages of this campaign get."""
    if campaign_id is None:
        return OFF
    found = conn.execute(select(campaigns.c.notify).where(campaigns.c.id == campaign_id)).scalar()
    return int(found or OFF)


def set_campaign_mode(conn: Connection, campaign_id: int, mode: int, now: float | None = None) -> None:
    """Set a campaign's mode; a digest's first day starts now."""
    values: dict[str, Any] = {"notify": mode}
    if mode == DIGEST:
        current = conn.execute(select(campaigns.c.digest_through).where(campaigns.c.id == campaign_id))
        if current.scalar() is None:
            values["digest_through"] = time.time() if now is None else now
    conn.execute(update(campaigns).where(campaigns.c.id == campaign_id).values(values))


def digests_wanted(conn: Connection) -> bool:
    """Any campaign in digest mode (a plain read; the deliverer looks before it takes a write lock)."""
    return (
        conn.execute(select(campaigns.c.id).where(campaigns.c.notify == DIGEST).limit(1)).first() is not None
    )


def make_digests(conn: Connection, now: float, period: float = DIGEST_PERIOD) -> int:
    """Queue the digest of every campaign whose day is over: the reads since its last digest. Each campaign's
    day is moved on with a compare-and-set, so two servers never make the same digest; a day without reads
    moves on without a notice. Returns how many digests were queued."""
    c = campaigns.c
    due = conn.execute(
        select(c.id, c.name, c.digest_through).where(
            c.notify == DIGEST, (c.digest_through.is_(None)) | (c.digest_through <= now - period)
        )
    ).all()
    made = 0
    for cid, name, through in due:
        same = c.digest_through.is_(None) if through is None else c.digest_through == through
        moved = conn.execute(update(campaigns).where(c.id == cid, same).values(digest_through=now)).rowcount
        if moved != 1 or through is None:
            continue
        m = messages.c
        window = and_(m.campaign_id == cid, m.read_notice_at > through, m.read_notice_at <= now)
        reads = conn.execute(
            select(m.id, m.read_notice_at)
            .where(window)
            .order_by(m.read_notice_at)
            .limit(DIGEST_MAX_READS + 1)
        ).all()
        if not reads:
            continue
        payload = {
            "campaign": name, "since": through, "until": now,
            "reads": [{"message_id": mid, "at": at} for mid, at in reads[:DIGEST_MAX_READS]],
            "more": len(reads) > DIGEST_MAX_READS,
        }  # fmt: skip
        enqueue(conn, "digest", [payload])
        made += 1
    return made


def targets(conn: Connection) -> dict[str, str]:
    """Where notices go, as set on the dashboard (``email``, ``url``, ``format``); missing: not set there."""
    return {
        name: value for name, value in conn.execute(select(notify_settings.c.name, notify_settings.c.value))
    }


def save_targets(conn: Connection, values: Mapping[str, str]) -> None:
    """Store the dashboard's values; an empty one is removed, so its DEADPIXEL_NOTIFY_* setting applies."""
    now = time.time()
    for name in SETTING_NAMES:
        if name not in values:
            continue
        value = values[name].strip()[:SETTING_MAX]
        conn.execute(delete(notify_settings).where(notify_settings.c.name == name))
        if value:
            conn.execute(insert(notify_settings).values(name=name, value=value, updated_at=now))
