"""Postfix's own plain notice (bounces sent without an RFC 3464 part, or with one we cannot read).

This is the Postfix program at host mx.example.net.
...                 The Postfix program
<a@example.org>: host mx.example.org[192.0.2.1] said: 550 5.1.1 <a@example.org>:
    Recipient address rejected: User unknown (in reply to RCPT TO command)
"""

from __future__ import annotations

import re
from email.message import Message

from deadpixel.bounces.vendors.model import Found
from deadpixel.bounces.vendors.text import body_text, from_blocks, has, subject

SIGNATURE = re.compile(r"^\s*This is the (?:[\w .-]{1,40} program|mail system) at host", re.M | re.I)
SIGNED = re.compile(r"^\s*The (?:[\w .-]{1,40} program|mail system)\s*$", re.MULTILINE)


def read(message: Message) -> list[Found] | None:
    title = subject(message).lower()
    text = body_text(message)
    head = SIGNATURE.search(text)
    if head is None:
        return None
    section = text[head.end() :]
    signed = SIGNED.search(section)
    if signed:
        section = section[signed.end() :]
    delayed = title.startswith("delayed mail") or has(
        text, "delivery temporarily suspended", "still being retried"
    )
    return [_permanence(f, delayed) for f in from_blocks(section)] or None


def _permanence(item: Found, delayed: bool) -> Found:
    """A delay warning is not permanent; a returned message is, unless the last reply was a 4xx (Postfix
    gave up retrying: that says nothing final about the address)."""
    permanent = not delayed and not (item.status or "").startswith("4")
    return Found(item.address, item.status, item.diagnostic, permanent)
