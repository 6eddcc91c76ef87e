"""Exim's notice ("This message was created automatically by mail delivery software"), and its delay warning.

    The following address(es) failed:
      a@example.org
        SMTP error from remote mail server after RCPT TO:<a@example.org>:
        host mx.example.org [192.0.2.1]: 550 5.1.1 No such user

A failure after "retry timeout exceeded" is Exim giving up on a host, not a verdict on the address.
"""

from __future__ import annotations

import re
from email.message import Message

from deadpixel.bounces.vendors.model import Found
from deadpixel.bounces.vendors.text import after, body_text, from_blocks, has

MARKER = "This message was created automatically by mail delivery software"
LIST = re.compile(
    r"(?:following\s+address(?:\(es\)|es)?\s+failed|address(?:es)?\s+to\s+which\s+the\s+message\s+has\s+not"
    r"\s+yet\s+been\s+delivered\s+(?:is|are)|(?:has|have)\s+not\s+yet\s+been\s+delivered\s+(?:is|are))\s*:",
    re.IGNORECASE,
)
UNDISCLOSED = re.compile(r"^([ \t]*)an undisclosed address\s*\n\s*\(generated from ([^)\s]+)\)", re.M | re.I)


def failures(text: str) -> list[Found]:
    """The failed recipients of an Exim-style notice (shared by the systems built on Exim)."""
    listed = LIST.search(text, 0, 8000)  # the list's title stands near the top
    section = text[listed.end() :] if listed else after(text, MARKER) or ""
    section = UNDISCLOSED.sub(r"\1\2", section)
    delayed = has(text, "has not yet been delivered", "No action is required on your part")
    if delayed or has(section, "retry timeout exceeded"):
        permanent: bool | None = False
    elif has(text, "permanent error", "could not be delivered"):
        permanent = True
    else:
        permanent = None
    return from_blocks(section, permanent)


def read(message: Message) -> list[Found] | None:
    text = body_text(message)
    if MARKER.lower() not in text.lower():
        return None
    return failures(text) or None
