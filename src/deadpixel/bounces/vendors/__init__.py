"""Bounces that carry no RFC 3464 report: the free-form texts of particular mail systems.

Each module here knows one family of mail systems (how it words a failure, where it puts the address and
the server's reply) and offers ``read(message) -> list[Found] | None``: None when the message is not one of
its own, decided from its headers or a marker sentence before any real work. ``read_free_form`` asks each
in turn (``chain.READERS``). What a failure *means* (its reason, whether it suppresses) is decided once, in
``deadpixel.bounces.reasons``, not here.
"""

from __future__ import annotations

import logging
from email.message import Message

from deadpixel.bounces.vendors.chain import READERS
from deadpixel.bounces.vendors.model import Found, Reader

__all__ = ["READERS", "Found", "Reader", "read_free_form"]
log = logging.getLogger(__name__)


def read_free_form(message: Message) -> tuple[str, list[Found]] | None:
    """(the mail system's name, its failed recipients), or None when no reader knows the message."""
    for name, read in READERS:
        try:
            found = read(message)
        except Exception as exc:  # one reader tripping over odd input must not stop the others
            log.warning("bounce reader %s could not read a message: %s: %s", name, type(exc).__name__, exc)
            continue
        if found:
            return name, found
    return None
