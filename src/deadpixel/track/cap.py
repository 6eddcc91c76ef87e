"""``DEADPIXEL_OPEN_CAP``: at most so many stored opens per message per minute, in each server process.

A script or a broken proxy hammering one genuine pixel must not grow the store without bound. Opens past
the cap are still answered with the GIF and are counted on their message (``capped_open_count``), so an
answered open is never unaccounted for; only its event row (time, address, client) is not kept. The cap
needs no coordination between servers: each enforces it on its own batches, so N servers store at most N
times the cap.
"""

from __future__ import annotations

from collections.abc import Sequence

from deadpixel.events import OpenEvent


class OpenCap:
    def __init__(self, per_minute: int) -> None:
        if per_minute < 1:
            raise ValueError("a cap of 0 means no cap: leave the OpenCap out instead")
        self.per_minute = per_minute
        self.capped_total = 0
        self._minute = -1
        self._stored: dict[str, int] = {}

    def split(self, events: Sequence[OpenEvent]) -> tuple[list[OpenEvent], dict[str, int]]:
        """The events to store, and per message how many were over the cap.

        An open from a minute earlier than the latest seen (a batch that straddles a minute) counts in the
        latest. A batch whose commit is retried is counted again, which can only cap more of that minute's
        opens; those are still counted on their message.
        """
        kept: list[OpenEvent] = []
        capped: dict[str, int] = {}
        for event in events:
            minute = int(event.at // 60)
            if minute > self._minute:
                self._minute = minute
                self._stored.clear()
            stored = self._stored.get(event.message_id, 0)
            if stored < self.per_minute:
                self._stored[event.message_id] = stored + 1
                kept.append(event)
            else:
                capped[event.message_id] = capped.get(event.message_id, 0) + 1
        self.capped_total += len(events) - len(kept)
        return kept, capped
