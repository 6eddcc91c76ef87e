"""The Courier mail server's notice ("UNDELIVERABLE MAIL", "DELAYS IN DELIVERING YOUR MESSAGE").

<a@example.org>:
    mx.example.org [192.0.2.1]:
>>> RCPT TO:<a@example.org>
<<< 550 5.1.1 <a@example.org>... User unknown
"""

from __future__ import annotations

from email.message import Message

from deadpixel.bounces.vendors.model import Found
from deadpixel.bounces.vendors.text import after, body_text, found, has, reply_lines, sender
from deadpixel.bounces.vendors.text import blocks as address_blocks


def read(message: Message) -> list[Found] | None:
    text = body_text(message)
    if "courier mail server at" not in sender(message) and not has(text, "Courier mail server at"):
        return None
    section = after(text, "UNDELIVERABLE MAIL", "DELAYS IN DELIVERING YOUR MESSAGE") or text
    permanent = not has(text, "DELAYS IN DELIVERING YOUR MESSAGE")
    result = []
    for address, said in address_blocks(section):
        replies = reply_lines(said.replace(" <<< ", "\n<<< ").replace(" >>> ", "\n>>> "))
        result.append(found(address, replies[-1].lstrip("<> ") if replies else said, permanent))
    return result or None
