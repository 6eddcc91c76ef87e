"""IBM/HCL Domino ("was not delivered to: ... because: ...") and the older Lotus Notes notice
("Undeliverable message", "------- Failure Reasons --------").

    Your message
      Subject: News
    was not delivered to:
      a@example.org
    because:
      User a (a@example.org) not listed in Domino Directory
"""

from __future__ import annotations

from email.message import Message

from deadpixel.bounces.vendors.model import Found
from deadpixel.bounces.vendors.text import addresses, after, before, body_text, found, has, subject


def _domino(text: str) -> list[Found]:
    listed = addresses(before(after(text, "was not delivered to:") or "", "because:"))
    reason = before(after(text, "because:") or "", "\n\n\n", "Original message")
    return [found(a, reason, True) for a in listed]


def _notes(text: str) -> list[Found]:
    section = before(after(text, "------- Failure Reasons") or "", "------- Returned Message")
    section = section.split("\n", 1)[1] if "\n" in section else ""
    listed = addresses(section)
    reason = "\n".join(line for line in section.split("\n") if line.strip() and not addresses(line))
    return [found(a, reason, True) for a in listed]


def read(message: Message) -> list[Found] | None:
    text = body_text(message)
    if has(text, "was not delivered to:") and has(text, "because:"):
        return _domino(text) or None
    if subject(message).startswith("Undeliverable message") and has(text, "------- Failure Reasons"):
        return _notes(text) or None
    return None
