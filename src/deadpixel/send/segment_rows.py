"""A segment as a recipient list: ``campaign send NAME --segment spring:non-openers`` instead of a CSV.

The segment is evaluated once, when the send starts, and its addresses become the same rows the CSV reader
yields, so the campaign runner treats them alike: resumable, sent once per address, suppressions skipped,
problems reported per row. A row's ``line`` is its place in the segment (1 for the first address, in
address order); its only template variable is ``email`` (deadpixel.reports.segments.MERGE_FIELDS), since
the columns of the list the recipient first came from are never stored.
"""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import Engine

from deadpixel.reports import segments
from deadpixel.send.recipients import BadRow, Row


class SegmentRecipients:
    """The recipients of ``spec`` (a definition or a saved segment's name) as of now."""

    def __init__(self, engine: Engine, spec: str) -> None:
        with engine.connect() as conn:
            self.segment = segments.resolve(conn, spec)
            self.addresses = segments.emails(conn, self.segment)

    def count(self) -> int:
        return len(self.addresses)

    def rows(self) -> Iterator[Row | BadRow]:
        for line, email in enumerate(self.addresses, 1):
            yield Row(line, {"email": email}, email, track=True)
