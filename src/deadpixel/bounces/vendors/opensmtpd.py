"""OpenSMTPD's notice ("This is the MAILER-DAEMON, please DO NOT REPLY to this email"): one line per
recipient, ``a@example.org: 550 5.1.1 No such user``."""

from __future__ import annotations

from email.message import Message

from deadpixel.bounces.vendors.model import Found
from deadpixel.bounces.vendors.text import after, body_text, from_blocks, has, subject

MARKER = "This is the MAILER-DAEMON, please DO NOT REPLY to this"


def read(message: Message) -> list[Found] | None:
    text = body_text(message)
    if not has(text, MARKER):
        return None
    section = (
        after(text, "following list of recipients:", "following recipients:") or after(text, MARKER) or ""
    )
    delayed = subject(message).lower().endswith("delay") or has(text, "has not been delivered yet", "delayed")
    return from_blocks(section, permanent=not delayed, skip=("Below is a copy",)) or None
