"""A campaign's recipients from the audience: the subscribed contacts with a tag, as a CSV list's rows.

The campaign runner takes them exactly as it takes a file's rows (``deadpixel.send.recipients``): each
contact's fields, its name and its address are the row's template variables; "line" is the contact's
place in the list (in the order contacts were added, from 2 as if under a header). Resuming does not
depend on it: the runner knows each recipient by address. The list is read once, when the send starts;
a contact who unsubscribes meanwhile is still skipped, by the runner's own check of the suppression
list before each chunk.
"""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import Engine

from deadpixel.send.recipients import BadRow, Row
from deadpixel.store.contacts import check_tag, list_contacts

__all__ = ["TagRecipients"]


class TagRecipients:
    """The subscribed contacts with ``tag``, read when made."""

    def __init__(self, engine: Engine, tag: str) -> None:
        self.tag = check_tag(tag)
        with engine.connect() as conn:
            found = list_contacts(conn, tag=self.tag, state="subscribed", opens=False)
        self._rows = [
            Row(line, {**c.fields, "name": c.name or "", "email": c.address}, c.address, True)
            for line, c in enumerate(found, 2)
        ]

    def count(self) -> int:
        return len(self._rows)

    def rows(self) -> Iterator[Row | BadRow]:
        return iter(self._rows)
