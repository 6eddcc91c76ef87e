"""Yahoo's own notices, and the generic qmail-derived "Unable to deliver message to the following
address(es)" of other providers (Sisimai's X2).

    Sorry, we were unable to deliver your message to the following address.
    <a@example.org>:
    Remote host said: 550 5.1.1 Unknown recipient [RCPT_TO]
"""

from __future__ import annotations

from email.message import Message

from deadpixel.bounces.vendors.model import Found
from deadpixel.bounces.vendors.qmail import failures
from deadpixel.bounces.vendors.text import body_text, has, sender

YAHOO = ("Sorry, we were unable to deliver your message to the following address",)
GENERIC = ("Unable to deliver message to the following address",)


def read_yahoo(message: Message) -> list[Found] | None:
    if "yahoo" not in sender(message):
        return None
    text = body_text(message)
    return (failures(text) or None) if has(text, *YAHOO, *GENERIC) else None


def read_unable(message: Message) -> list[Found] | None:
    if "mailer-daemon" not in sender(message):
        return None
    text = body_text(message)
    return (failures(text) or None) if has(text, *GENERIC) else None
