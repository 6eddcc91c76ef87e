"""The client's address: the socket peer, or what a trusted proxy says in X-Forwarded-For / Forwarded.

Headers are believed only from configured proxies, and read right to left: each hop appends the address it
saw, so the first address that is not one of our proxies is the client. Anything unparseable falls back to
the last trustworthy address rather than failing.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence

from deadpixel.config import Network

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _parse_ip(text: str) -> IPAddress | None:
    text = text.strip().strip('"')
    if text.startswith("["):  # "[2001:db8::1]:4711" (Forwarded) or "[2001:db8::1]"
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # "192.0.2.1:4711"
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _forwarded_for(value: str) -> list[str]:
    """The ``for=`` parameters of an RFC 7239 Forwarded header, in order."""
    found = []
    for element in value.split(","):
        for pair in element.split(";"):
            name, _, param = pair.partition("=")
            if name.strip().lower() == "for":
                found.append(param)
    return found


class ClientIPResolver:
    """Resolved chains are cached: behind a proxy the same few thousand readers and image proxies come back
    again and again, and parsing a chain costs several microseconds on the hot path."""

    def __init__(self, trusted_proxies: Sequence[Network], cache_size: int = 65536) -> None:
        self._trusted = tuple(trusted_proxies)
        self._chain = functools.lru_cache(maxsize=cache_size)(self._resolve_chain)

    def _is_trusted(self, ip: IPAddress) -> bool:
        return any(ip in network for network in self._trusted)

    def trusts(self, peer: str | None) -> bool:
        """Whether forwarding headers from this socket peer are believed."""
        ip = _parse_ip(peer) if peer else None
        return ip is not None and self._is_trusted(ip)

    def resolve(self, peer: str | None, headers: Iterable[tuple[bytes, bytes]]) -> str | None:
        """Return the client address as text, given the socket peer and the raw request headers."""
        if peer is None or not self._trusted:
            return peer
        forwarded = xff = b""
        for name, value in headers:
            lname = name.lower()
            if lname == b"forwarded":
                forwarded = forwarded + b"," + value if forwarded else value
            elif lname == b"x-forwarded-for":
                xff = xff + b"," + value if xff else value
        result: str = self._chain(peer, forwarded, xff)
        return result

    def _resolve_chain(self, peer: str, forwarded: bytes, xff: bytes) -> str:
        peer_ip = _parse_ip(peer)
        if peer_ip is None or not self._is_trusted(peer_ip):
            return peer
        # Forwarded (the standard) wins over the de-facto X-Forwarded-For when both are present.
        chain = _forwarded_for(forwarded.decode("latin-1")) if forwarded else []
        if not chain and xff:
            chain = xff.decode("latin-1").split(",")
        client = peer_ip
        for hop in reversed(chain):
            ip = _parse_ip(hop)
            if ip is None:
                break
            client = ip
            if not self._is_trusted(ip):
                break
        return str(client)
