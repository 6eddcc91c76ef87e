"""1&1 and Web.de (kundenserver.de, web.de): Exim's opening, the addresses, then one reason for all.

The following address failed:
a@example.org
For the following reason:
Mail size limit exceeded. For explanation visit ...
"""

from __future__ import annotations

from email.message import Message

from deadpixel.bounces.vendors.exim import MARKER, failures
from deadpixel.bounces.vendors.model import Found
from deadpixel.bounces.vendors.text import addresses, after, before, body_text, found, has, received, sender

REASON = "For the following reason:"


def read(message: Message) -> list[Found] | None:
    where = sender(message) + received(message)
    if not any(name in where for name in ("kundenserver.de", "web.de", "1and1", "1und1", "ionos")):
        return None
    text = body_text(message)
    if not has(text, MARKER):
        return None
    if not has(text, REASON):
        return failures(text) or None
    listed = addresses(before(after(text, "failed:") or "", REASON))
    reason = before(after(text, REASON) or "", "\n\n\n", "--- The header of the original message")
    permanent = not has(text, "retry timeout exceeded", "has not yet been delivered")
    return [found(a, reason, permanent) for a in listed] or None
