"""Recipient addresses as people write them: parsed once, refused unless plain, one key per mailbox.

One rule everywhere an address comes in (campaign lists, ``send --to/--cc``, ``pixel new --to``, the API,
the relay's RCPT, the suppression list): the local part must be a dot-atom, letters, digits and
``!#$%&'*+-/=?^_`{|}~`` separated by single dots. A local part that would need quoting (``"a b"@x``,
``"x@y>"@x``) is refused, never unquoted: an unquoted ``x@y>@x`` is read by SMTP libraries and servers as
the different address ``x@y``, so the address checked against the suppression list would not be the one
mail goes to. Such addresses are vanishingly rare in practice; refusing them is the simplest safe rule.
The domain must be a host name (IDNA-encoded when not ASCII); address literals (``[192.0.2.1]``) are refused.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from email import policy as email_policy
from email.errors import NonASCIILocalPartDefect
from email.headerregistry import Address

from deadpixel.errors import DeadpixelError

_ATEXT = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+"
_DOT_ATOM = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")
_HEADERS = email_policy.SMTP.header_factory


@dataclass(frozen=True, slots=True)
class Recipient:
    header: str  # for the To header: the display name (if any) and ``address``, re-rendered from the parse
    address: str  # the bare address, IDNA domain: what RCPT TO carries, what is stored on the message
    key: str  # lower-cased address: one per mailbox, for duplicates, resuming and the suppression list


class BadAddress(DeadpixelError, ValueError):
    pass


def local_part_problem(local: str, *, utf8: bool = False) -> str | None:
    """Why this local part is refused (see the module's docstring), or None.

    ``utf8``: the relay's client asked for SMTPUTF8, so non-ASCII letters count as atext (RFC 6531); spaces,
    separators and control or format characters of any script still do not.
    """
    if not local.isascii():
        if not utf8:
            return "non-ASCII local part (needs SMTPUTF8, which deadpixel does not use)"
        if any(unicodedata.category(c)[0] in "CZ" for c in local if not c.isascii()):
            return "local part holds a space, control or format character"
        local = "".join(c if c.isascii() else "a" for c in local)
    if len(local) > 64:
        return "local part longer than 64 characters"
    if not _DOT_ATOM.fullmatch(local):
        return "local part needs quoting (spaces, quotes, <>,;\\ or similar), which deadpixel refuses"
    return None


def mail_domain(domain: str) -> str:
    """The domain as sent (IDNA), or BadAddress when it is not a host name."""
    domain = domain.rstrip(".")
    try:
        domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError:
        raise BadAddress("domain is not a valid internationalised name") from None
    labels = domain.split(".")
    if len(labels) < 2 or any(len(label) > 63 or not _LABEL.fullmatch(label) for label in labels):
        raise BadAddress(f"domain {domain!r} is not a mail domain")
    return domain


def parse_recipient(value: str, *, utf8: bool = False) -> Recipient:
    """Accept ``addr`` or ``Name <addr>``; raise BadAddress with the reason otherwise.

    ``utf8`` allows a non-ASCII local part (the relay, for a client that asked for SMTPUTF8)."""
    text = value.strip()
    if not text:
        raise BadAddress("empty address")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise BadAddress("control character or line break in address")
    try:
        parsed = _HEADERS("To", text)
    except Exception:  # the standard library's parser trips over some garbage ("bad@") instead of flagging it
        raise BadAddress("not an email address") from None
    addresses: tuple[Address, ...] = getattr(parsed, "addresses", ())
    if len(addresses) != 1:
        raise BadAddress("not exactly one address" if addresses else "not an email address")
    found = addresses[0]
    defects = [d for d in parsed.defects if not isinstance(d, NonASCIILocalPartDefect)]
    if defects or not found.username or not found.domain:
        raise BadAddress("not an email address")
    problem = local_part_problem(found.username, utf8=utf8)
    if problem:
        raise BadAddress(problem)
    domain = mail_domain(found.domain)
    address = f"{found.username}@{domain}"
    if len(address) > 254:
        raise BadAddress("address longer than 254 characters")
    header = str(Address(display_name=found.display_name, username=found.username, domain=domain))
    return Recipient(header=header, address=address, key=address.lower())
