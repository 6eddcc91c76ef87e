"""``campaign send --at-best-time``: each stored row due at its recipient's next best hour (within 24 h).

The times come from ``deadpixel.reports.sendtime.next_best_time``: the recipient's usual hour of human
opens, or the audience's best hour (every campaign's human opens) for a recipient without history, or now
when nobody has ever opened. They are worked out once, when the campaign is stored; the server sends each
row when it is due (``deadpixel.send.job_runner``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import Connection

from deadpixel.mail.addresses import BadAddress, parse_recipient
from deadpixel.reports.sendtime import audience_best_hour, next_best_time
from deadpixel.store.campaign_jobs import StoredRow


def at_best_times(conn: Connection, rows: Sequence[StoredRow], now: float, zone: ZoneInfo) -> list[StoredRow]:
    """``rows`` with ``due_at`` set; a row that cannot be sent (its problem is reported) is due now.
    Fold the rollups first: the audience's hour is read from them."""
    audience = audience_best_hour(conn, None, zone)
    moment = datetime.fromtimestamp(now, UTC)
    timed = []
    for row in rows:
        due = now
        if row.problem is None:
            try:
                key = parse_recipient(row.email).key
            except BadAddress:
                key = None
            if key is not None:
                due = next_best_time(conn, key, moment, zone, audience).timestamp()
        timed.append(dataclasses.replace(row, due_at=due))
    return timed
