"""From a raw open to the row stored: enrichment, the verdict, the message pattern, and the kept address.

Runs in the ingest writer, per batch, off the request: the pixel has long been queued when this runs, and the
answer waits only for the commit of the batch.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deadpixel.config import Settings
from deadpixel.enrich.classify import Enricher, Enrichment, Verdict, prefetch_word
from deadpixel.enrich.clicks import ClickClassifier
from deadpixel.enrich.geo import GeoLookup
from deadpixel.enrich.message import MessageEvent, adjust_message_verdicts
from deadpixel.enrich.networks import Networks
from deadpixel.enrich.privacy import redacted, scrubbed, stored_ip
from deadpixel.enrich.useragent import warm_up
from deadpixel.events import OpenEvent

log = logging.getLogger(__name__)

ENRICHED_FIELDS: tuple[str, ...] = Enrichment._fields
_UNCLASSIFIED: tuple[None, ...] = (None,) * len(ENRICHED_FIELDS)
_ROW_FIELDS = (*OpenEvent._fields, *ENRICHED_FIELDS)


def enricher_from_settings(settings: Settings) -> Enricher | None:
    if not settings.enrichment:
        return None
    warm_up()
    geo = GeoLookup(str(settings.geoip_database) if settings.geoip_database else None)
    networks = Networks.load(update_dir=networks_dir(settings))
    return Enricher(geo, self_ips=[str(network) for network in settings.self_ips], networks=networks)


def networks_dir(settings: Settings) -> Path:
    """Where `deadpixel networks update` writes fresher copies of the shipped network lists."""
    return settings.data_dir / "networks"


class OpenClassifier:
    """Builds stored rows; without an enricher (``DEADPIXEL_ENRICHMENT=false``) opens stay unclassified.

    Its ``clicks`` (a ``ClickClassifier`` over the same enricher) judges clicks by their own rules; the click
    writer is given that."""

    def __init__(self, enricher: Enricher | None, ip_mode: str = "truncate") -> None:
        self.enricher = enricher
        self.ip_mode = ip_mode
        self.clicks = ClickClassifier(enricher, ip_mode)

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenClassifier:
        return cls(enricher_from_settings(settings), settings.ip_mode)

    def enrich(self, event: OpenEvent, sent_at: float | None) -> dict[str, Any]:
        return dict(zip(ENRICHED_FIELDS, self.values(event, sent_at), strict=True))

    def values(self, event: OpenEvent, sent_at: float | None) -> tuple[Any, ...]:
        """The enriched columns, in ``ENRICHED_FIELDS`` order."""
        if self.enricher is None:
            return _UNCLASSIFIED
        try:
            return self.enricher.enrich_open(
                event.ip,
                event.user_agent,
                event.method,
                prefetch_word(event.purpose),
                event.at - sent_at if sent_at is not None else None,
            )
        except Exception:  # a rule bug must never cost an open: store it unclassified
            kept = redacted(event, self.ip_mode)
            trace = scrubbed(traceback.format_exc(), [(event.ip, kept.ip)])
            log.error("enrichment failed for %r\n%s", kept, trace.rstrip())
            return _UNCLASSIFIED

    def rows(self, events: Sequence[OpenEvent], sent_at: dict[str, float]) -> list[dict[str, Any]]:
        values, fields = self.values, _ROW_FIELDS
        rows = [
            dict(zip(fields, (*event, *values(event, sent_at.get(event.message_id))), strict=True))
            for event in events
        ]
        if self.enricher is not None:
            apply_message_pattern(rows)  # on the full addresses
        for row in rows:
            row["ip"] = stored_ip(row["ip"], self.ip_mode)
        return rows


def apply_message_pattern(rows: list[dict[str, Any]]) -> None:
    """Scanner bursts spread to browser-looking fetches of the same message from the same network."""
    kinds = {row["kind"] for row in rows}
    if "scanner" not in kinds or "human" not in kinds:  # the usual batch: nothing to spread
        return
    by_message: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_message.setdefault(row["message_id"], []).append(row)
    for group in by_message.values():
        kinds = {row["kind"] for row in group}
        if "scanner" not in kinds or "human" not in kinds:
            continue
        events = [
            MessageEvent(row["at"], row["ip"], Verdict(row["kind"], row["reason"] or "", row["rule"] or ""))
            for row in group
        ]
        for row, verdict in zip(group, adjust_message_verdicts(events), strict=True):
            if verdict.kind != row["kind"]:
                row.update(kind=verdict.kind, reason=verdict.reason, rule=verdict.rule)
