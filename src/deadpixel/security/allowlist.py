"""The webhook allow-list setting (``DEADPIXEL_WEBHOOK_ALLOW``): how its items are read and compared.

Here rather than in ``deadpixel.hooks.guard``, so that ``deadpixel.config`` can check the setting when it
loads without importing the hooks package, which itself sits above the settings.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

__all__ = ["Network", "normalise_name", "parse_allow"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_HOST = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")


def normalise_name(host: str) -> str:
    """Lower case, without IPv6 brackets or a trailing dot: the form names are compared in."""
    name = host.strip().lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    return name[:-1] if name.endswith(".") and not name.endswith("..") else name


def parse_allow(items: Iterable[str]) -> tuple[tuple[Network, ...], frozenset[str]]:
    """The allow-list setting's CIDRs and addresses, and its host names. Raises ValueError on a bad item."""
    networks: list[Network] = []
    hosts: set[str] = set()
    for item in items:
        text = item.strip()
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
            continue
        except ValueError:
            pass
        name = normalise_name(text)
        if not _HOST.fullmatch(name):
            raise ValueError(f"{item!r} is not a CIDR range, an IP address or a host name")
        hosts.add(name)
    return tuple(networks), frozenset(hosts)
