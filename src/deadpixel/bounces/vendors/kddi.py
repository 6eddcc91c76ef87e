"""au by KDDI (ezweb.ne.jp, au.com): the older "Could not be delivered to: <a@...>" notice and the
"Mail System Error - Returned Mail" one, whose English sentence stands above the addresses.

    Your mail sent on: Thu, 29 Apr 2010 11:04:47 +0900
        Could not be delivered to: <a@ezweb.ne.jp>
        As their mailbox is full.
"""

from __future__ import annotations

import re
from email.message import Message

from deadpixel.bounces.vendors.model import Found
from deadpixel.bounces.vendors.text import ADDRESS, body_text, found, received, sender, subject

OLDER = re.compile(r"Could not be delivered to:\s*<?(" + ADDRESS.pattern + r")>?\s*\n\s*([^\n]{0,500})", re.I)
ALONE = re.compile(r"^\s*<(" + ADDRESS.pattern + r")>\s*$", re.MULTILINE)
SENTENCE = re.compile(r"^(?:The user\(s\) |Your message |Each of the following )[^\n]{0,500}", re.MULTILINE)


def read(message: Message) -> list[Found] | None:
    where = sender(message) + received(message)
    if not any(name in where for name in ("ezweb.ne.jp", "au.com", "dion.ne.jp")):
        return None
    text = body_text(message)
    older = OLDER.findall(text)
    if older:
        return [found(a, said, True) for a, said in older[:200]]
    if subject(message) != "Mail System Error - Returned Mail":
        return None
    sentence = SENTENCE.search(text)
    said = sentence.group(0) if sentence else None
    permanent = not (said and "temporarily" in said)
    return [found(a, said, permanent) for a in dict.fromkeys(ALONE.findall(text)[:200])] or None
