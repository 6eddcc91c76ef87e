"""The one reply a submitting client gets for all its recipients' copies.

SMTP answers DATA once per message, so the copies' outcomes are folded: 250 only when the upstream took
every copy; any permanent refusal is passed back as a 5xx (the client shows it to the user); otherwise a
temporary failure becomes a 4xx and the client retries later. Copies already accepted are recorded, so that
retry sends only the others.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

_MAX_TEXT = 400


@dataclass(frozen=True, slots=True)
class Failure:
    code: int | None  # the upstream's reply code, None when there was no reply (connection refused...)
    text: str

    @property
    def permanent(self) -> bool:
        return self.code is not None and 500 <= self.code < 600


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"


def client_reply(failures: Mapping[str, Failure], delivered: int) -> str:
    """The reply to DATA when copies went to ``delivered`` recipients and failed for ``failures``."""
    if not failures:
        return f"250 2.0.0 OK: sent to {delivered} recipient(s)"
    permanent = {rcpt: f for rcpt, f in failures.items() if f.permanent}
    chosen = permanent or failures
    codes = {f.code for f in chosen.values()}
    code = codes.pop() if len(codes) == 1 else None
    details = "; ".join(
        f"{rcpt}: {f.code} {f.text}" if f.code is not None else f"{rcpt}: {f.text}"
        for rcpt, f in chosen.items()
    )
    sent = f" (sent to the {delivered} other recipient(s))" if delivered else ""
    if permanent:
        reply_code = code if code is not None and 550 <= code <= 554 else 554
        return _one_line(f"{reply_code} 5.0.0 upstream refused {details}{sent}")
    reply_code = code if code in (450, 451, 452) else 451
    return _one_line(f"{reply_code} 4.4.0 upstream did not take it, try again later: {details}{sent}")
