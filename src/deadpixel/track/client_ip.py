"""The client's address: the socket peer, or what a trusted proxy wrote in the one header the operator named.

Only ``DEADPIXEL_PROXY_HEADER`` (``X-Forwarded-For`` by default, or ``Forwarded`` or ``X-Real-IP``) is read,
and only when the socket peer is one of ``DEADPIXEL_TRUSTED_PROXIES``. Reading any header a proxy happens to
pass through would let a reader choose their own address: nginx and Caddy hand the client's own ``Forwarded``
and ``X-Real-IP`` on untouched, so a reader sending ``Forwarded: for=17.58.0.1`` would have been Apple.

The header's hops are read right to left: each proxy appends the address it saw, so the first hop that is not
one of our proxies is the client, and whatever lies to its left may have been written by the client itself.
Anything unparseable stops the walk at the last trustworthy address rather than failing.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence

from deadpixel.config import PROXY_HEADERS, Network, Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Hops read from the right of the header: more than any real chain of proxies, few enough that a forged
# header of thousands of hops costs no more than a short one. Past them the walk stops where it is.
MAX_HOPS = 16
# Header values longer than this are resolved without the cache: two IPv6 hops with ports fit, and a
# cache entry then costs at most ~370 bytes (measured), so the cache holds at most ~24 MiB however it is fed.
MAX_CACHED_VALUE = 128
MAX_HOP_TEXT = 64  # a quoted, bracketed IPv6 address with a port is shorter


def _parse_ip(text: str) -> IPAddress | None:
    text = text.strip().strip('"')
    if len(text) > MAX_HOP_TEXT:
        return None
    if text.startswith("["):  # "[2001:db8::1]:4711" (Forwarded) or "[2001:db8::1]"
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # "192.0.2.1:4711"
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _forwarded_for(element: str) -> str:
    """The ``for=`` parameter of one RFC 7239 Forwarded element; empty when it has none."""
    for pair in element.split(";"):
        name, _, param = pair.partition("=")
        if name.strip().lower() == "for":
            return param
    return ""


def rightmost_hops(value: str, limit: int = MAX_HOPS) -> list[str]:
    """At most ``limit`` comma-separated hops from the right of ``value``, rightmost last."""
    parts = value.rsplit(",", limit)
    return parts[1:] if len(parts) > limit else parts


class ClientIPResolver:
    """Resolved chains are cached: behind a proxy the same few thousand readers and image proxies come back
    again and again, and parsing a chain costs several microseconds on the hot path. The cache is keyed on the
    peer and the header's value only when that value is short (MAX_CACHED_VALUE), so a client sending long
    unique headers cannot make it grow past its bound in bytes; such a request is resolved uncached, reading
    only the last MAX_HOPS hops."""

    def __init__(
        self, trusted_proxies: Sequence[Network], header: str = "x-forwarded-for", cache_size: int = 65536
    ) -> None:
        if header not in PROXY_HEADERS:
            raise ValueError(f"unknown proxy header {header!r}")
        self._trusted = tuple(trusted_proxies)
        self._header = header.encode("ascii")
        self._forwarded = header == "forwarded"
        self._chain = functools.lru_cache(maxsize=cache_size)(self._resolve_chain)

    @classmethod
    def from_settings(cls, settings: Settings) -> ClientIPResolver:
        """The resolver of every way in: the trusted proxies and the one header the operator named."""
        return cls(settings.trusted_proxies, settings.proxy_header)

    def _is_trusted(self, ip: IPAddress) -> bool:
        return any(ip in network for network in self._trusted)

    def trusts(self, peer: str | None) -> bool:
        """Whether forwarding headers from this socket peer are believed."""
        ip = _parse_ip(peer) if peer else None
        return ip is not None and self._is_trusted(ip)

    def resolve(self, peer: str | None, headers: Iterable[tuple[bytes, bytes]]) -> str | None:
        """Return the client address as text, given the socket peer and the raw request headers (names in
        lower case, as ASGI servers and deadpixel.track.protocol give them)."""
        if peer is None or not self._trusted:
            return peer
        wanted = self._header
        value = b""
        for name, found in headers:
            if name == wanted:
                value = value + b"," + found if value else found  # several headers are one list
        if len(value) > MAX_CACHED_VALUE:
            return self._resolve_chain(peer, value)
        result: str = self._chain(peer, value)
        return result

    def cache_info(self) -> functools._CacheInfo:
        return self._chain.cache_info()

    def _resolve_chain(self, peer: str, value: bytes) -> str:
        peer_ip = _parse_ip(peer)
        if peer_ip is None or not self._is_trusted(peer_ip):
            return peer
        client = peer_ip
        if not value:
            return str(client)
        for hop in reversed(rightmost_hops(value.decode("latin-1"))):
            ip = _parse_ip(_forwarded_for(hop) if self._forwarded else hop)
            if ip is None:
                break
            client = ip
            if not self._is_trusted(ip):
                break
        return str(client)
