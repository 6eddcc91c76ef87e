"""Trend Micro InterScan Messaging Security Suite: the SMTP exchange that failed, then the recipient.

Sent <<< RCPT TO:<a@example.org>
Received >>> 550 5.1.1 unknown user.
Unable to deliver message to <a@example.org>.
"""

from __future__ import annotations

import re
from email.message import Message

from deadpixel.bounces.vendors.model import Found
from deadpixel.bounces.vendors.text import ADDRESS, body_text, found, has, sender

SENT = re.compile(
    r"Sent <<< RCPT TO:\s*<?(" + ADDRESS.pattern + r")>?\s*\n\s*Received >>> ([^\n]{1,500})", re.I
)
UNABLE = re.compile(r"Unable to deliver message to <(" + ADDRESS.pattern + r")>", re.I)


def read(message: Message) -> list[Found] | None:
    text = body_text(message)
    if "interscan" not in sender(message) and not has(text, "Message from InterScan Messaging"):
        return None
    replies = {a.lower(): said for a, said in SENT.findall(text)}
    listed = dict.fromkeys([*replies, *(a.lower() for a in UNABLE.findall(text))])
    return [found(a, replies.get(a) or "Unable to deliver message", True) for a in listed] or None
