"""Ipswitch IMail Server (X-Mailer ``<SMTP32 v...>``): one line per recipient, the reply below it.

Unknown user: a@example.org
RCPT TO generated following response:
550 5.1.1 <a@example.org>... Addressee unknown
"""

from __future__ import annotations

import re
from email.message import Message

from deadpixel.bounces.vendors.model import Found
from deadpixel.bounces.vendors.text import ADDRESS, body_text, found, header, subject

LINE = re.compile(
    r"^([A-Za-z][A-Za-z ]{2,60}?(?: \d+ attempts)?)(?::|\s+to)\s*<?(" + ADDRESS.pattern + r")>?\s*$"
)


def read(message: Message) -> list[Found] | None:
    if not (header(message, "X-Mailer").startswith("<SMTP32 v") or subject(message) == "Undeliverable Mail"):
        return None
    result: list[tuple[str, list[str]]] = []
    for line in body_text(message).split("\n")[:2000]:
        head = LINE.match(line.strip()[:1000])
        if head:
            result.append((head.group(2), [head.group(1)]))
        elif result and line.strip() and not line.rstrip().endswith("response:"):
            result[-1][1].append(line.strip())
    # a reply from the server says more than IMail's own label ("Unknown user", "Delivery failed")
    return [found(a, " ".join(reversed(said)), True) for a, said in result[:200]] or None
