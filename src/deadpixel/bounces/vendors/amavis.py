"""amavis (From "Content-filter at ..."): mail the content filter refused, one recipient per block.

The message WAS NOT relayed to:
<a@example.org>:
   554 5.7.0 Reject, id=12345-01 - spam
"""

from __future__ import annotations

from email.message import Message

from deadpixel.bounces.vendors.model import Found
from deadpixel.bounces.vendors.text import after, body_text, from_blocks, header


def read(message: Message) -> list[Found] | None:
    if not header(message, "From").lstrip().startswith('"Content-filter at '):
        return None
    text = body_text(message)
    section = (
        after(text, "WAS NOT relayed to:", "could not be delivered to:", "was not delivered to:") or text
    )
    return from_blocks(section, permanent=True) or None
