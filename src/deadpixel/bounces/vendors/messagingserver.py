"""Oracle (Sun, iPlanet) Communications Messaging Server: labelled lines per recipient.

Your message cannot be delivered to the following recipients:
  Recipient address: a@example.org
  Reason: Remote SMTP server has rejected address
  Diagnostic code: smtp;550 5.1.1 <a@example.org>... User unknown
"""

from __future__ import annotations

import re
from email.message import Message

from deadpixel.bounces.vendors.model import Found
from deadpixel.bounces.vendors.text import ADDRESS, after, body_text, found, has

MARKER = "This report relates to a message you sent with the following header fields"
LABEL = re.compile(
    r"^\s*(Recipient address|Original address|Reason|Diagnostic code|Remote system|Date):\s*(.*)$", re.I
)
LIST = "cannot be delivered to the following recipients:"


def read(message: Message) -> list[Found] | None:
    text = body_text(message)
    if not has(text, MARKER):
        return None
    permanent = not has(text, "has not yet been delivered", "delivery is delayed")
    section = after(text, LIST, "following recipients:") or text
    result: list[tuple[str, dict[str, str]]] = []
    for line in section.split("\n")[:2000]:
        label = LABEL.match(line[:1000])
        if not label:  # the system's own words about the last recipient, as some versions write them
            if result and line.strip():
                said = result[-1][1]
                said["text"] = f"{said.get('text', '')} {line.strip()}"
            continue
        name, value = label.group(1).lower(), label.group(2).strip()
        if name == "recipient address":  # may be a local name only ("a@sims-ms-daemon")
            result.append((value, {}))
        elif result:
            result[-1][1][name] = (
                value.partition(";")[2] if name == "diagnostic code" and ";" in value else value
            )
    return [
        f
        for f in (
            # the original address is the one deadpixel sent to; the recipient address, where it went
            found(
                _original(said) or address,
                said.get("diagnostic code") or said.get("text") or said.get("reason"),
                permanent,
            )
            for address, said in result[:200]
        )
        if ADDRESS.fullmatch(f.address)
    ] or None


def _original(said: dict[str, str]) -> str | None:
    hit = ADDRESS.search(said.get("original address", ""))
    return hit.group(0) if hit else None
