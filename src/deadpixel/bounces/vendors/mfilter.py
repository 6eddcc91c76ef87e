"""Digital Arts m-FILTER ("failure notice"; X-Mailer m-FILTER): addresses first, then dashed sections.

a@example.org
-------server message
550 5.1.1 unknown user <a@example.org>
-------SMTP command
RCPT TO
"""

from __future__ import annotations

from email.message import Message

from deadpixel.bounces.vendors.model import Found
from deadpixel.bounces.vendors.text import addresses, after, before, body_text, found, header, subject


def read(message: Message) -> list[Found] | None:
    if subject(message) != "failure notice" or "m-filter" not in header(message, "X-Mailer").lower():
        return None
    text = body_text(message)
    head = before(text, "-------server message", "-------SMTP command", "-------original message")
    said = before(after(text, "-------server message") or "", "-------").strip()
    return [found(a, said or None, True) for a in addresses(head)] or None
