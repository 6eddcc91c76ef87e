"""Bounces that carry no RFC 3464 report: the free-form texts of particular mail systems.

Each module here knows one family of mail systems (how it words a failure, where it puts the address and
the server's reply) and offers ``read(message) -> list[Found] | None``: None when the message is not one of
its own. ``read_free_form`` asks each in turn. What a failure *means* (its reason, whether it suppresses) is
decided once, in ``deadpixel.bounces.reasons``, not here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message


@dataclass(frozen=True, slots=True)
class Found:
    """One failed recipient as a free-form bounce states it."""

    address: str  # lower-cased
    status: str | None = None  # enhanced status code, when the text gives one
    diagnostic: str | None = None  # the receiving server's reply or the mail system's sentence
    permanent: bool | None = None  # None: the text does not say


Reader = Callable[[Message], "list[Found] | None"]
READERS: tuple[tuple[str, Reader], ...] = ()


def read_free_form(message: Message) -> tuple[str, list[Found]] | None:
    """(the mail system's name, its failed recipients), or None when no reader knows the message."""
    for name, read in READERS:
        found = read(message)
        if found:
            return name, found
    return None
