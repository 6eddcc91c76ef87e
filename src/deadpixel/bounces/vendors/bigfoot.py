"""Bigfoot's forwarding service: report fields written into the text of a mail from bigfoot.com."""

from __future__ import annotations

from email.message import Message

from deadpixel.bounces.vendors.model import Found
from deadpixel.bounces.vendors.text import body_text, received, report_fields, sender


def read(message: Message) -> list[Found] | None:
    if "@bigfoot.com" not in sender(message) and ".bigfoot.com " not in received(message):
        return None
    return report_fields(body_text(message), permanent=True) or None
