"""Mail services whose notices are Exim's, told apart by where they come from: mail.ru, MXLogic
(McAfee), GMX and mail.com. Their text is read by the Exim reader; only the name differs."""

from __future__ import annotations

from collections.abc import Callable
from email.message import Message

from deadpixel.bounces.vendors.exim import MARKER, failures
from deadpixel.bounces.vendors.model import Found
from deadpixel.bounces.vendors.text import body_text, header, received, sender


def _hosted(sign: Callable[[Message], bool]) -> Callable[[Message], list[Found] | None]:
    def read(message: Message) -> list[Found] | None:
        if not sign(message):
            return None
        text = body_text(message)
        return (failures(text) or None) if MARKER[:40].lower() in text.lower() else None

    return read


read_mailru = _hosted(lambda m: "mail.ru" in sender(m) or "mail.ru" in header(m, "Message-ID").lower())
read_mxlogic = _hosted(lambda m: "mxlogic.net" in sender(m) or "mxlogic.net" in received(m))
read_gmx = _hosted(
    lambda m: m.get("X-GMX-Antispam") is not None or "@gmx." in sender(m) or "mail.com" in sender(m)
)
