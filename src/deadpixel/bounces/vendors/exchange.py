"""Microsoft Exchange (5.5 to 2003, 2007 and later) and Microsoft 365 notices without a readable report.

did not reach the following recipient(s):                  (Exchange 5.5 - 2003)
a@example.org on Fri, 4 Oct 2002 17:12:28 -0400
    The recipient name is not recognized

Delivery has failed to these recipients or groups:         (Exchange 2007 and later, Microsoft 365)
a@example.org
The email address you entered couldn't be found. ...
Remote Server returned '550 5.1.1 RESOLVER.ADR.RecipNotFound; not found'
"""

from __future__ import annotations

import re
from email.message import Message

from deadpixel.bounces.vendors.model import Found
from deadpixel.bounces.vendors.text import ADDRESS, after, before, body_text, found, one_line

OLDER = (
    "did not reach the following recipient(s):",
    "The following recipient(s) cannot be reached:",
    "could not be delivered to the following user",
)
NEWER = (
    "Delivery has failed to these recipients or groups:",
    "Your message couldn't be delivered",
    "couldn't be delivered.",
)
TO = re.compile(r"Your message to\s+<?(" + ADDRESS.pattern + r")>? couldn't be delivered", re.IGNORECASE)
SMTP_EQ = re.compile(r"SMTP=(" + ADDRESS.pattern + ")", re.IGNORECASE)
RETURNED = re.compile(
    r"(?:Remote Server|Server at [^\n]{1,200}) returned '([^'\n]{1,500})'|#([245]\d\d [^#\n]{1,500})##"
    r"|<[^<>\n]{0,200}#([245]\.\d{1,3}\.\d{1,3}[^<>\n]{0,500})>",
    re.IGNORECASE,
)
DATE_TAIL = re.compile(r"^[\s\d:+-]*$")  # the rest of a date wrapped onto its own line
NOISE = ("The MTS-ID", "MSEXCH:", ";p=", "Diagnostic information for administrators")


def _recipient(line: str) -> str | None:
    """The address a recipient line of the older notice names.

    ``a@b on <date>``, ``"A" <a@b>``, ``c=US;...;dda:SMTP=a@b; on <date>``.
    """
    hit = SMTP_EQ.search(line)
    if hit:
        return hit.group(1)
    hit = ADDRESS.search(line)
    if hit is None:
        return None
    head, tail = line[: hit.start()], line[hit.end() :]
    if re.match(r">?\s+on\s", tail) or len((head + tail).split()) <= 3:
        return hit.group(0)
    return None


def _older(section: str) -> list[Found]:
    result: list[Found] = []
    for line in section.split("\n")[:500]:
        address = _recipient(line)
        if address:
            result.append(found(address, None, True))
        elif result and line.strip() and not any(n in line for n in NOISE) and not DATE_TAIL.match(line):
            last = result.pop()
            result.append(found(last.address, f"{last.diagnostic or ''} {line.strip()}", True))
    return result


def _newer(text: str, section: str) -> list[Found]:
    listed = TO.findall(text) or ADDRESS.findall(
        before(section, "Diagnostic information", "Generating server")
    )
    returned = RETURNED.search(text)
    server = next((g for g in returned.groups() if g), None) if returned else None
    sentence = one_line(before(section, "Diagnostic information", "Generating server"))
    for address in listed:
        sentence = (sentence or "").replace(address, "")
    diagnostic = server or sentence
    return [found(a, diagnostic, True) for a in dict.fromkeys(a.lower() for a in listed[:200])]


def read(message: Message) -> list[Found] | None:
    text = body_text(message)
    section = after(text, *OLDER)
    if section is not None:
        return _older(before(section, "\n\n\n", "Original message", "Old message:")) or None
    section = after(text, *NEWER)
    if section is None:
        return None
    return _newer(text, section) or None
