"""qmail ("Hi. This is the qmail-send program") and the many qmail-based systems that reword its opening
("failure notice" from MAILER-DAEMON, "Unable to deliver message to the following address(es)").

    <a@example.org>:
    192.0.2.1 does not like recipient.
    Remote host said: 550 5.1.1 <a@example.org>: Recipient address rejected
    Giving up on 192.0.2.1.
"""

from __future__ import annotations

from email.message import Message

from deadpixel.bounces.vendors.model import Found
from deadpixel.bounces.vendors.text import body_text, from_blocks, has, sender, subject

MARKERS = (
    "This is the qmail-send program",
    "I'm afraid I wasn't able to deliver your message",
    "we were not able to deliver your message to the following address",
    "does not like recipient.",
    "Remote host said:",
)
SUBJECTS = ("failure notice", "permanent delivery failure")


def failures(text: str) -> list[Found]:
    """qmail returns a message only once it has given up: each failure is permanent unless qmail says it
    gave up for the time the message spent in its queue, or the last reply was a temporary (4xx) one."""
    expired = has(text, "this message has been in the queue too long", "not going to try again")
    return [
        Found(f.address, f.status, f.diagnostic, not expired and not (f.status or "").startswith("4"))
        for f in from_blocks(text, skip=("--- Below this line",))
    ]


def read(message: Message) -> list[Found] | None:
    text = body_text(message)
    qmail_like = subject(message).lower().startswith(SUBJECTS) and "mailer-daemon" in sender(message)
    if not (qmail_like or has(text, *MARKERS)):
        return None
    return failures(text) or None
