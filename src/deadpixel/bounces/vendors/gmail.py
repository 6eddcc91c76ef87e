"""Gmail and Google Workspace plain-text notices, the older ("Delivery to the following recipient failed
permanently", "Technical details of permanent failure") and the newer ("Your message wasn't delivered to
a@example.org because ...", "The response from the remote server was:")."""

from __future__ import annotations

import re
from email.message import Message

from deadpixel.bounces.vendors.model import Found
from deadpixel.bounces.vendors.text import ADDRESS, after, before, body_text, found, has, sender

LIST = re.compile(
    r"Delivery to the following recipients? (?:failed permanently|failed temporarily|has been delayed)"
    r"\s*:",
    re.IGNORECASE,
)
DETAILS = (
    "Technical details of permanent failure:",
    "Technical details of temporary failure:",
    "The response from the remote server was:",
    "The response was:",
)
NEWER = re.compile(
    r"(?:wasn't|was not|hasn't been|couldn't be) delivered to\s+<?(" + ADDRESS.pattern + ")", re.IGNORECASE
)


def read(message: Message) -> list[Found] | None:
    if not any(name in sender(message) for name in ("googlemail.com", "google.com", "gmail.com")):
        return None
    text = body_text(message)
    listed = LIST.search(text)
    if listed:
        addresses = ADDRESS.findall(
            before(text[listed.end() :], *DETAILS, "\n\n\n", "Message will be retried")
        )
    else:
        addresses = [m.group(1) for m in NEWER.finditer(text)]
    if not addresses:
        return None
    details = after(text, *DETAILS)
    diagnostic = before(details, "\n\n", "----- ") if details else None
    quoted = after(details or "", "The error that the other server returned was:")
    if quoted is not None:  # the receiving server's own reply says more than Google's sentence about it
        diagnostic = before(quoted.lstrip(), "\n\n", "----- ") or diagnostic
    permanent = not has(
        text, "temporary failure", "has been delayed", "will be retried", "failed temporarily"
    )
    return [found(a, diagnostic, permanent) for a in dict.fromkeys(a.lower() for a in addresses[:200])]
