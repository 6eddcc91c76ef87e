"""Which hosts a webhook may reach: not the server's own networks, unless the operator allow-lists them.

Whoever can add a webhook chooses where the server sends requests, so without a check a webhook is a way to
probe the server's loopback, its private network and the cloud metadata service. A URL is checked when it is
added (a clear refusal at once) and again at every connection: ``PinnedBackend`` resolves the name, checks
every address it resolved to and connects to the checked address, so a name that resolved to a public
address when the webhook was added and to 127.0.0.1 later (DNS rebinding) still cannot reach loopback.
Numeric hosts are read the way the C resolver reads them (``2130706433``, ``0x7f.1``, ``017700000001`` and
``127.1`` are all 127.0.0.1), since that is what a connection to them would reach.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpcore

from deadpixel.errors import DeadpixelError
from deadpixel.security.allowlist import Network, normalise_name, parse_allow

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]
ALLOW_SETTING = "DEADPIXEL_WEBHOOK_ALLOW"

_RANGES: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "an unspecified address"),
    ("10.0.0.0/8", "a private address"),
    ("100.64.0.0/10", "a carrier-grade NAT address"),
    ("127.0.0.0/8", "a loopback address"),
    ("169.254.0.0/16", "a link-local address (where cloud metadata services answer)"),
    ("172.16.0.0/12", "a private address"),
    ("192.0.0.0/24", "a reserved address"),
    ("192.0.2.0/24", "a reserved (documentation) address"),
    ("192.88.99.0/24", "a reserved address"),
    ("192.168.0.0/16", "a private address"),
    ("198.18.0.0/15", "a reserved (benchmarking) address"),
    ("198.51.100.0/24", "a reserved (documentation) address"),
    ("203.0.113.0/24", "a reserved (documentation) address"),
    ("224.0.0.0/4", "a multicast address"),
    ("240.0.0.0/4", "a reserved address"),
    ("::/128", "an unspecified address"),
    ("::1/128", "a loopback address"),
    ("::/8", "a reserved address"),
    ("64:ff9b:1::/48", "a private (local NAT64) address"),
    ("100::/64", "a reserved (discard) address"),
    ("2001::/23", "a reserved address"),
    ("2001:db8::/32", "a reserved (documentation) address"),
    ("3fff::/20", "a reserved (documentation) address"),
    ("fc00::/7", "a private (unique local) address"),
    ("fe80::/10", "a link-local address"),
    ("fec0::/10", "a reserved (site-local) address"),
    ("ff00::/8", "a multicast address"),
)
BLOCKED: tuple[tuple[Network, str], ...] = tuple((ipaddress.ip_network(n), why) for n, why in _RANGES)
# Names that reach the machine itself or a cloud's metadata service whatever DNS says about them.
BLOCKED_NAMES = frozenset(
    {
        "localhost",
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.internal",
    }
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_PART = re.compile(r"0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*")


class Refused(DeadpixelError):
    """A webhook target the server must not reach; the message is one line saying why."""


def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for ``host`` (raises OSError when there is none)."""
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


def _part_value(part: str) -> int:
    """One part of a numeric IPv4 host: ``0x`` hex, leading-zero octal, or decimal (as inet_aton reads)."""
    if part[:2].lower() == "0x":
        return int(part[2:] or "0", 16)
    return int(part, 8) if part.startswith("0") else int(part)


def numeric_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address the C resolver reads in ``host`` (one to four decimal, octal or hex parts), or None
    for a name. Raises Refused for a number that no resolver reads as an address (out of range)."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or not all(_PART.fullmatch(p) for p in parts):
        return None
    values = [_part_value(p) for p in parts]
    *leading, last = values
    if any(v > 255 for v in leading) or last >= 256 ** (5 - len(values)):
        raise Refused(f"{host!r} is not a usable address")
    number = last
    for shift, v in enumerate(reversed(leading), start=1):
        number |= v << (8 * (4 - len(values) + shift))
    return ipaddress.IPv4Address(number)


def literal(host: str) -> Address | None:
    """The address ``host`` spells out, in any form a resolver accepts, or None for a name."""
    name = normalise_name(host)
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return numeric_ipv4(name)


def embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (IPv4-mapped, NAT64 or 6to4), whose range decides."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def blocked_reason(address: Address) -> str | None:
    """Why a webhook may not reach ``address`` (loopback, private, ...), or None for a public address."""
    inner = embedded_ipv4(address)
    if inner is not None:
        return blocked_reason(inner)
    for network, why in BLOCKED:
        if address in network:
            return why
    if address.is_multicast or address.is_reserved or not address.is_global:
        return "not a public address"
    return None


@dataclass(frozen=True, slots=True)
class Guard:
    """The check, with the operator's allow-list (``DEADPIXEL_WEBHOOK_ALLOW``) and the resolver to use."""

    networks: tuple[Network, ...] = ()
    hosts: frozenset[str] = frozenset()
    resolver: Resolver = field(default=system_resolver, compare=False)

    @classmethod
    def allowing(cls, *items: str, resolver: Resolver = system_resolver) -> Guard:
        networks, hosts = parse_allow(items)
        return cls(networks, hosts, resolver)

    def refusal(self, address: Address) -> str | None:
        """Why ``address`` is refused, or None when it is public or allow-listed."""
        if any(address in n for n in self.networks if n.version == address.version):
            return None
        inner = embedded_ipv4(address)
        if inner is not None and any(inner in n for n in self.networks if n.version == 4):
            return None
        return blocked_reason(address)

    def _named(self, host: str) -> tuple[str, Address | None]:
        """The normalised name and the address it spells out; Refused for a blocked literal or name."""
        name = normalise_name(host)
        address = literal(name)
        if address is not None:
            why = self.refusal(address)
            if why:
                meant = embedded_ipv4(address) or address  # what a resolver-reader should see
                shown = host if str(meant) == name else f"{host} ({meant})"
                raise Refused(f"{shown} is {why}; allow it with {ALLOW_SETTING} if it is meant")
        elif name not in self.hosts and (name in BLOCKED_NAMES or name.endswith(".localhost")):
            raise Refused(f"{host} names this machine or a cloud metadata service; allow it with "
                          f"{ALLOW_SETTING} if it is meant")  # fmt: skip
        return name, address

    def _checked(self, host: str, name: str, port: int) -> list[Address]:
        found = [ipaddress.ip_address(a.split("%", 1)[0]) for a in self.resolver(name, port)]
        if not found:
            raise OSError(f"{host} has no address")
        if name in self.hosts:
            return found
        for address in found:
            why = self.refusal(address)
            if why:
                raise Refused(f"{host} resolves to {why}; allow it with {ALLOW_SETTING} if it is meant")
        return found

    def check_host(self, host: str, port: int, resolve: bool = True) -> None:
        """At add time: refuse a blocked literal, name, or (``resolve``) resolved address. A name that does
        not resolve now is accepted (its receiver may not exist yet); each delivery checks it again."""
        name, address = self._named(host)
        if address is not None or not resolve:
            return
        try:
            self._checked(host, name, port)
        except (OSError, UnicodeError, ValueError):
            return

    def addresses(self, host: str, port: int) -> list[Address]:
        """At connection time: the checked addresses to connect to (Refused, or OSError if none resolve)."""
        name, address = self._named(host)
        if address is not None:
            return [address]
        return self._checked(host, name, port)


class PinnedBackend(httpcore.SyncBackend):
    """Connects only to addresses the guard has checked, resolved once for this connection. The TLS layer
    above still verifies the certificate against the URL's host name (httpcore sends it as SNI)."""

    def __init__(self, guard: Guard) -> None:
        self._guard = guard

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        try:
            addresses = self._guard.addresses(host, port)
        except Refused as exc:
            raise httpcore.ConnectError(f"refused: {exc}") from None
        except (OSError, UnicodeError, ValueError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        failure: Exception = httpcore.ConnectError(f"no address for {host}")
        for address in addresses:
            try:
                return super().connect_tcp(str(address), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise failure
