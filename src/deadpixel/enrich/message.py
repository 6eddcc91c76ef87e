"""The pattern across one message's events: scanners that change user agent between requests.

Defender and other gateways fetch the same message several times within seconds, from the same network,
rotating user agents (blank, then an ordinary Chrome whose version varies: laravel-passwordless-login #79,
opencollective #3656). Request by request, the browser-looking fetches pass as people. Across the message they
do not: a reader's device does not share a /24 (IPv6: /48) with a scanner and fetch within seconds of it.

The rule: an event judged ``human`` within ``window`` seconds of an event judged ``scanner`` from the same
/24 (IPv6 /48) becomes ``scanner``. Only first-hand scanner verdicts spread (no chains), so one scanner
cannot sweep a whole day of opens. It works on truncated addresses too (deadpixel's default keeps the /24),
and does nothing without addresses (DEADPIXEL_IP_MODE=none). Proxy, prefetch and self verdicts are left alone.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from deadpixel.enrich.classify import Verdict
from deadpixel.enrich.networks import format_ip, parse_ip

SAME_NETWORK_WINDOW = 30.0


@dataclass(frozen=True, slots=True)
class MessageEvent:
    at: float  # seconds since the epoch
    ip: str | None  # as stored: full, truncated or None
    verdict: Verdict


def _network_key(ip: str | None) -> tuple[int, int] | None:
    parsed = parse_ip(ip)
    if parsed is None:
        return None
    version, value = parsed
    return (4, value >> 8) if version == 4 else (6, value >> 80)


def _network_text(key: tuple[int, int]) -> str:
    version, prefix = key
    return f"{format_ip((4, prefix << 8))}/24" if version == 4 else f"{format_ip((6, prefix << 80))}/48"


def adjust_message_verdicts(
    events: Sequence[MessageEvent], window: float = SAME_NETWORK_WINDOW
) -> list[Verdict]:
    """Verdicts for one message's ``events`` (any order), with scanner bursts carried to their neighbours."""
    scanner_times: dict[tuple[int, int], list[float]] = {}
    keys = [_network_key(event.ip) for event in events]
    for event, key in zip(events, keys, strict=True):
        if key is not None and event.verdict.kind == "scanner":
            scanner_times.setdefault(key, []).append(event.at)
    for times in scanner_times.values():
        times.sort()
    adjusted = []
    for event, key in zip(events, keys, strict=True):
        verdict = event.verdict
        times = scanner_times.get(key, []) if key is not None else []
        if verdict.kind == "human" and times and key is not None:
            i = bisect.bisect_left(times, event.at)
            gaps = [abs(times[j] - event.at) for j in (i - 1, i) if 0 <= j < len(times)]
            if gaps and min(gaps) <= window:
                reason = (
                    f"{round(min(gaps), 1):g} s from a scanner fetch of this message from the same network "
                    f"{_network_text(key)} (was: {verdict.reason})"
                )
                verdict = Verdict("scanner", reason, "message-burst")
        adjusted.append(verdict)
    return adjusted
