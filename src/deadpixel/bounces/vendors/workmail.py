"""Amazon WorkMail (X-Mailer: Amazon WorkMail): a sentence, then report fields written as text
("Technical report:", ``Final-Recipient``, ``Diagnostic-Code``, ``Status``)."""

from __future__ import annotations

from email.message import Message

from deadpixel.bounces.vendors.model import Found
from deadpixel.bounces.vendors.text import after, body_text, header, report_fields


def read(message: Message) -> list[Found] | None:
    if "amazon workmail" not in header(message, "X-Mailer").lower():
        return None
    report = after(body_text(message), "Technical report:")
    if report is None:
        return None
    delayed = "delayed" in report.lower() and "action: failed" not in report.lower()
    return report_fields(report, permanent=not delayed) or None
