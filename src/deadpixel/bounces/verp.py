"""VERP: each message's envelope sender is ``bounces+<token>@BOUNCE_DOMAIN``, so a bounce names its message.

The token is signed like the pixel's (its own purpose byte, so a pixel token is no bounce address) and carries
only the random message id: nothing about the recipient appears in the address, and a forged or garbled one
is refused without a database read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from deadpixel.security.tokens import TokenSigner

LOCAL_PREFIX = "bounces+"
TOKEN_CHARS = 32


def bounce_address(signer: TokenSigner, message_id: str, domain: str) -> str:
    return f"{LOCAL_PREFIX}{signer.bounce_token(message_id)}@{domain}"


def envelope_sender(signer: TokenSigner, domain: str | None, message_id: str | None) -> str | None:
    """The VERP sender of a tracked message when DEADPIXEL_BOUNCE_DOMAIN is set; None: keep the usual."""
    if domain is None or message_id is None:
        return None
    return bounce_address(signer, message_id, domain)


def message_for(signer: TokenSigner, address: str, domain: str) -> str | None:
    """The message id behind a genuine bounce address of ``domain``; None for anything else."""
    if len(address) > 320:
        return None
    local, at, host = address.strip().strip("<>").rpartition("@")
    if not at or host.lower().rstrip(".") != domain:
        return None
    local = local.lower()
    if not local.startswith(LOCAL_PREFIX):
        return None
    return signer.bounce_message_id(local[len(LOCAL_PREFIX) :])


def _pattern(domain: str) -> re.Pattern[str]:
    token = f"[0-9a-v]{{{TOKEN_CHARS}}}"
    return re.compile(rf"(?<![\w.+-]){re.escape(LOCAL_PREFIX)}({token})@{re.escape(domain)}(?![\w-])", re.I)


def messages_in(signer: TokenSigner, texts: Iterable[str], domain: str) -> list[str]:
    """The message ids of genuine bounce addresses found anywhere in ``texts`` (header values), in order."""
    pattern = _pattern(domain)
    found: list[str] = []
    for text in texts:
        for match in pattern.finditer(text[:100_000]):
            message_id = signer.bounce_message_id(match.group(1).lower())
            if message_id is not None and message_id not in found:
                found.append(message_id)
    return found
