"""TransWARE Active!hunter: sendmail's wording, each recipient written
``>>> a@example.org <a@example.org>``."""

from __future__ import annotations

from email.message import Message

from deadpixel.bounces.vendors.model import Found
from deadpixel.bounces.vendors.sendmail import failures
from deadpixel.bounces.vendors.text import body_text, header, subject


def read(message: Message) -> list[Found] | None:
    if not (
        header(message, "From").lstrip().startswith('"MAILER-DAEMON"')
        and "FAILURE NOTICE :" in subject(message)
    ):
        return None
    return failures(body_text(message)) or None
