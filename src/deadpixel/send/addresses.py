"""Recipient addresses as people write them, checked once and reduced to one key per mailbox."""

from __future__ import annotations

from dataclasses import dataclass
from email.headerregistry import Address

from deadpixel.mail.compose import MAIL_POLICY


@dataclass(frozen=True, slots=True)
class Recipient:
    header: str  # as given, for the To header ("Zoë <zoe@example.org>" or a bare address)
    address: str  # the bare address, IDNA domain, as sent in RCPT TO and stored on the message
    key: str  # lower-cased address: one per mailbox, for duplicates, resuming and the suppression list


class BadAddress(ValueError):
    pass


def parse_recipient(value: str) -> Recipient:
    """Accept ``addr`` or ``Name <addr>``; raise BadAddress with the reason otherwise."""
    text = value.strip()
    if not text:
        raise BadAddress("empty address")
    if "\r" in text or "\n" in text:
        raise BadAddress("line break in address")
    try:
        parsed = MAIL_POLICY.header_factory("To", text)
    except Exception:  # the standard library's parser trips over some garbage ("bad@") instead of flagging it
        raise BadAddress("not an email address") from None
    addresses: tuple[Address, ...] = getattr(parsed, "addresses", ())
    if len(addresses) != 1:
        raise BadAddress("not exactly one address" if addresses else "not an email address")
    found = addresses[0]
    if parsed.defects or not found.username or not found.domain:
        raise BadAddress("not an email address")
    if not found.username.isascii():
        raise BadAddress("non-ASCII local part (needs SMTPUTF8, which deadpixel does not use)")
    domain = found.domain.rstrip(".")
    try:
        domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError:
        raise BadAddress("domain is not a valid internationalised name") from None
    labels = domain.split(".")
    if len(labels) < 2 or any(not label or len(label) > 63 for label in labels) or " " in domain:
        raise BadAddress(f"domain {domain!r} is not a mail domain")
    address = f"{found.username}@{domain}"
    if len(address) > 254:
        raise BadAddress("address longer than 254 characters")
    return Recipient(header=text, address=address, key=address.lower())
