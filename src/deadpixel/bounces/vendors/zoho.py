"""Zoho Mail (X-ZohoMail): one line per recipient after Exim's opening sentence.

a@example.org Invalid Address, ERROR_CODE :550, ERROR_CODE :5.1.1 <a@example.org>... User Unknown
[Status: Error, Address: <b@example.org>, ResponseCode 421, , Host not reachable.]
"""

from __future__ import annotations

import re
from email.message import Message

from deadpixel.bounces.vendors.model import Found
from deadpixel.bounces.vendors.text import ADDRESS, after, body_text, found, sender

MARKER = "This message was created automatically by mail delivery"
LINE = re.compile(r"^(" + ADDRESS.pattern + r")[ \t]+(\S.*)$")
STATUS = re.compile(r"^\[Status: [^<\n]{0,100}<(" + ADDRESS.pattern + r")>,(.*)\]\s*$")


def read(message: Message) -> list[Found] | None:
    if message.get("X-ZohoMail") is None and "zoho" not in sender(message):
        return None
    section = after(body_text(message), MARKER)
    if section is None:
        return None
    result: dict[str, Found] = {}
    for line in section.split("\n")[:2000]:
        line = line.strip()[:1000]
        hit = LINE.match(line) or STATUS.match(line)
        if hit:
            address, said = hit.group(1).lower(), hit.group(2)
            result.setdefault(address, found(address, said, "host not reachable" not in said.lower()))
    return list(result.values())[:200] or None
