"""The ``Deadpixel-Signature`` header: HMAC-SHA256 over the timestamp and the exact body, Stripe-style.

``t=<unix seconds>,v1=<hex>`` where the hex is HMAC-SHA256(secret, "<t>." + body). Signing the timestamp with
the body lets a receiver refuse old deliveries (``REPLAY_WINDOW``) so a captured request cannot be replayed
later; a receiver should also drop event ids it has already seen, since a delivery can arrive twice.
"""

from __future__ import annotations

import hashlib
import hmac
import time

HEADER = "Deadpixel-Signature"
REPLAY_WINDOW = 300  # seconds a receiver should accept a signature for


def signature(secret: str, timestamp: int, body: bytes) -> str:
    message = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, now: float | None = None) -> str:
    """The header value for ``body`` sent now."""
    timestamp = int(time.time() if now is None else now)
    return f"t={timestamp},v1={signature(secret, timestamp, body)}"


def verify(
    secret: str, header: str, body: bytes, tolerance: int = REPLAY_WINDOW, now: float | None = None
) -> bool:
    """What a receiver runs: True only for a signature by ``secret`` over ``body`` made within ``tolerance``
    seconds of ``now``; several ``v1=`` values are allowed, so a receiver can accept either of two secrets."""
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = signature(secret, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)
