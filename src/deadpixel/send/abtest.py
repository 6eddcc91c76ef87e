"""Sending an A/B test: split the list, send the test share at once, keep the rest for the winner.

The split is random but fixed by a seed stored with the test, so running the same command again (after a
crash or Ctrl-C) splits the list the same way and the campaign runner sends only what was not sent. The test
share is divided evenly (sizes differ by one at most) between the variants. The rest is written to the
store before anything is sent (``deadpixel.store.abtests.hold``); the winner's send reads it from there, so
it needs neither the list file nor the command that started the test.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from sqlalchemy import Engine

from deadpixel.mail.addresses import BadAddress, parse_recipient
from deadpixel.send.recipients import BadRow, RecipientList, Row
from deadpixel.store import abtests

LABELS = "ABCDEFGHIJ"
HOLD_BATCH = 500
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d)?\s*$", re.IGNORECASE)
_UNIT = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def parse_duration(value: str) -> float:
    """``4h``, ``90m``, ``1.5d``, ``3600`` (seconds) as seconds; ValueError with what is accepted."""
    found = _DURATION.match(value)
    if not found:
        raise ValueError(f"{value!r} is not a duration: use a number and s, m, h or d, e.g. 4h")
    seconds = float(found.group(1)) * _UNIT[(found.group(2) or "s").lower()]
    if not 0 < seconds <= 30 * 86400:
        raise ValueError("a duration from 1 second to 30 days")
    return seconds


def split(keys: Sequence[str], labels: Sequence[str], share: float, seed: str) -> dict[str, str]:
    """The test share of ``keys`` (distinct addresses), each with its variant's label.

    At least one recipient per variant (when there are enough); the rest of the share is dealt in turn, so
    the variants' sizes differ by one at most. Which keys, and in what order, follows from the seed alone.
    """
    order = sorted(set(keys))
    random.Random(seed).shuffle(order)
    size = min(len(order), max(len(labels), round(len(order) * share)))
    return {key: labels[i % len(labels)] for i, key in enumerate(order[:size])}


def _key(email: str) -> str | None:
    try:
        return parse_recipient(email).key
    except BadAddress:
        return None


@dataclass
class Split:
    """A list divided for a test: ``assigned`` maps the test share's addresses to their variants."""

    recipients: RecipientList
    assigned: dict[str, str]

    @classmethod
    def of(cls, recipients: RecipientList, labels: Sequence[str], share: float, seed: str) -> Split:
        keys = [key for row in recipients.rows() if isinstance(row, Row) and (key := _key(row.email))]
        return cls(recipients, split(keys, labels, share, seed))

    def hold_rest(self, engine: Engine, campaign_id: int) -> int:
        """Store every row outside the test share for the winner; returns how many addresses wait."""
        batch: list[abtests.Waiting] = []
        held = 0
        for row in self.recipients.rows():
            if not isinstance(row, Row):
                continue
            key = _key(row.email)
            if key is None or key in self.assigned:
                continue
            batch.append(abtests.Waiting(key, row.line, row.email, row.values, row.track))
            if len(batch) >= HOLD_BATCH:
                held += self._hold(engine, campaign_id, batch)
                batch = []
        return held + self._hold(engine, campaign_id, batch)

    @staticmethod
    def _hold(engine: Engine, campaign_id: int, batch: list[abtests.Waiting]) -> int:
        with engine.begin() as conn:
            abtests.hold(conn, campaign_id, batch)
        return len({row.address for row in batch})

    def variant_of(self, key: str) -> str | None:
        return self.assigned.get(key)

    def test_share(self) -> TestShare:
        return TestShare(self)


class TestShare:
    """The rows the test sends now: its share, and the rows that cannot be sent (reported as usual)."""

    def __init__(self, split: Split) -> None:
        self._split = split

    def count(self) -> int:
        return len(self._split.assigned)

    def rows(self) -> Iterator[Row | BadRow]:
        for row in self._split.recipients.rows():
            if isinstance(row, BadRow):
                yield row
                continue
            key = _key(row.email)
            if key is None or key in self._split.assigned:
                yield row


class WaitingList:
    """The recipients kept for the winner, read from the store as a list of rows for the campaign runner."""

    def __init__(self, engine: Engine, campaign_id: int) -> None:
        self._engine = engine
        self._campaign_id = campaign_id

    def count(self) -> int:
        with self._engine.connect() as conn:
            return abtests.count_waiting(conn, self._campaign_id)

    def rows(self) -> Iterator[Row | BadRow]:
        after = (-1, "")
        while True:
            with self._engine.connect() as conn:  # not held open while the runner sends a page
                page = abtests.waiting_page(conn, self._campaign_id, after)
            if not page:
                return
            for kept in page:
                yield Row(kept.line, kept.values, kept.email, kept.track)
            after = (page[-1].line, page[-1].address)
