"""DragonFly Mail Agent (dma): "There was an error delivering your mail to <a@example.org>.", then what
the receiving host said.

    mx.example.org [192.0.2.1] did not like our RCPT TO:
    550 5.1.1 <a@example.org>: Recipient address rejected: User unknown
"""

from __future__ import annotations

import re
from email.message import Message

from deadpixel.bounces.vendors.model import Found
from deadpixel.bounces.vendors.text import ADDRESS, body_text, found, has

MARKER = "This is the DragonFly Mail Agent"
ERROR = re.compile(
    r"There was an error delivering your mail to <(" + ADDRESS.pattern + r")>\.?", re.IGNORECASE
)


def read(message: Message) -> list[Found] | None:
    text = body_text(message)
    if not has(text, MARKER):
        return None
    hits = list(ERROR.finditer(text))
    result = []
    for index, hit in enumerate(hits[:200]):
        end = hits[index + 1].start() if index + 1 < len(hits) else len(text)
        result.append(found(hit.group(1), text[hit.end() : end], True))
    return result or None
