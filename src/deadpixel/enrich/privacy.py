"""What is kept of a reader's address: all of it, the network part, or nothing (``DEADPIXEL_IP_MODE``).

Enrichment sees the full address first, so country and network survive even when the address does not.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from typing import TypeVar

from deadpixel.events import ClickEvent, OpenEvent

Event = TypeVar("Event", OpenEvent, ClickEvent)

IP_MODES = ("full", "truncate", "none")


def stored_ip(ip: str | None, mode: str) -> str | None:
    """``truncate`` zeroes the host bits: /24 for IPv4 (81.2.69.0), /48 for IPv6 (2001:db8:85a3::)."""
    if ip is None or mode == "full":
        return ip
    if mode == "none":
        return None
    return _truncated(ip)


@functools.lru_cache(maxsize=65536)
def _truncated(ip: str) -> str | None:
    """Cached: parsing costs about 25 µs, and readers, proxies and scanners come back again and again."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)


def redacted(event: Event, mode: str) -> Event:
    """``event`` with its address reduced as the store would keep it: what a spool file or a log line may
    hold. Derive country and network from the full address before this, never after."""
    if mode == "full" or event.ip is None:
        return event
    return event._replace(ip=stored_ip(event.ip, mode))


def scrubbed(text: str, addresses: Iterable[tuple[str | None, str | None]]) -> str:
    """``text`` (a traceback, an error message) with each full address replaced by what is kept of it.

    Exceptions raised while an event is handled may quote its address; the log line must not.
    """
    changes = {full: kept or "-" for full, kept in addresses if full and full != kept}
    for full in sorted(changes, key=len, reverse=True):  # 81.2.69.160 before 81.2.69.16
        text = text.replace(full, changes[full])
    return text
