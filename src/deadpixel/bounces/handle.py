"""One message that came back: read it, find which message it is about, record it; every outcome logged.

The listener knows the bounce address from the envelope (checked at RCPT time); a message read from a
mailbox names it in its delivery headers or, for a complaint, in the returned original's Return-Path or
the report's Original-Mail-From. Anything without exactly one genuine bounce address is ignored.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine

from deadpixel.bounces.parse import read_report
from deadpixel.bounces.record import Recorded, record, report_key
from deadpixel.bounces.verp import message_for, messages_in
from deadpixel.security.tokens import TokenSigner

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Processor:
    engine: Engine
    signer: TokenSigner
    domain: str
    soft_limit: int
    max_size: int

    def process(
        self, raw: bytes, *, source: str, envelope_to: Sequence[str] | None = None
    ) -> Recorded | None:
        """Record what ``raw`` reports; None when it reports nothing deadpixel acts on (logged why)."""
        digest = hashlib.sha256(raw).hexdigest()[:12]
        if len(raw) > self.max_size:
            log.warning("report %s ignored: %d bytes, more than %d", digest, len(raw), self.max_size)
            return None
        report = read_report(raw)
        if report.kind not in ("bounce", "complaint"):  # delivered, auto-reply, other, malformed
            log.info("report %s ignored: %s (%s)", digest, report.kind, report.note)
            return None
        if envelope_to is not None:
            found = [m for a in envelope_to if (m := message_for(self.signer, a, self.domain)) is not None]
            ids = list(dict.fromkeys(found))
        else:
            ids = messages_in(self.signer, report.delivered_to, self.domain) or messages_in(
                self.signer, report.original_from, self.domain
            )
        if len(ids) != 1:
            why = "no genuine bounce address" if not ids else f"{len(ids)} bounce addresses"
            log.warning("report %s ignored: %s %s", digest, report.note, why)
            return None
        with self.engine.begin() as conn:
            recorded = record(
                conn, report, ids[0], source=source, key=report_key(ids[0], raw),
                soft_limit=self.soft_limit, at=time.time(),
            )  # fmt: skip
        log.info(
            "report %s (%s) on message %s: %s%s%s", digest, report.note, recorded.message_id,
            recorded.outcome, f" ({recorded.reason})" if recorded.reason else "",
            ", recipient suppressed" if recorded.suppressed else "",
        )  # fmt: skip
        return recorded
