"""Known networks: documented scanner ranges (CIDR files) and network owners named by the geo data.

Two kinds of evidence with different strength, kept apart on purpose:
- CIDR files list ranges a vendor documents as its machines (Microsoft EOP, Barracuda): a hit is a verdict.
- Owner groups say who runs a network (Google, Apple, Microsoft, Proofpoint, clouds): never a verdict alone,
  because Google and Microsoft also carry real readers' opens through their webmail proxies; the classifier
  only uses them to corroborate a user agent or a send time.
Everything is read from files at start-up; nothing here touches the network.
"""

from __future__ import annotations

import csv
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")
IP = tuple[int, int]  # (version, address as an integer): cheap to build, hash and mask

DATA = resources.files("deadpixel.enrich") / "data"
NETWORK_FILES = ("microsoft-eop.csv", "barracuda.csv")
"""Shipped CIDR files; a file of the same name in the update directory replaces the shipped one."""
UPDATE_ONLY_FILES = ("apple-private-relay.csv", "google-user-triggered-fetchers.csv")
"""Official lists too large or too volatile to ship; present only after ``deadpixel.enrich.update`` ran."""


def parse_ip(text: str | None) -> IP | None:
    """Parse an address strictly (no '1' for '0.0.0.1'); IPv4-mapped IPv6 becomes IPv4. None if invalid."""
    if not text or len(text) > 45:
        return None
    try:
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
    except (OSError, ValueError):
        pass
    try:
        value = int.from_bytes(socket.inet_pton(socket.AF_INET6, text), "big")
    except (OSError, ValueError):
        return None
    if value >> 32 == 0xFFFF:
        return 4, value & 0xFFFFFFFF
    return 6, value


def format_ip(ip: IP) -> str:
    version, value = ip
    if version == 4:
        return socket.inet_ntop(socket.AF_INET, value.to_bytes(4, "big"))
    return socket.inet_ntop(socket.AF_INET6, value.to_bytes(16, "big"))


def parse_cidr(text: str) -> tuple[IP, int]:
    """'40.107.0.0/16' -> ((4, int), 16), host bits cleared. Raises ValueError on anything else."""
    address, _, length_text = text.strip().partition("/")
    ip = parse_ip(address)
    if ip is None:
        raise ValueError(f"{text!r} is not an IP address or CIDR range")
    bits = 32 if ip[0] == 4 else 128
    length = bits
    if length_text:
        if not length_text.isdigit() or int(length_text) > bits:
            raise ValueError(f"{text!r} has an invalid prefix length")
        length = int(length_text)
    mask = ((1 << length) - 1) << (bits - length)
    return (ip[0], ip[1] & mask), length


@dataclass(frozen=True, slots=True)
class NetworkEntry:
    cidr: str  # as written in the file, for reasons a person reads
    owner: str  # "Microsoft EOP", "Barracuda Email Gateway Defense", ...
    kind: str  # "scanner" (a hit is a verdict) or "info" (evidence only)
    source: str


class PrefixTable(Generic[T]):
    """Longest-prefix match over a few hundred thousand ranges: one dict probe per distinct prefix length."""

    def __init__(self, items: Iterable[tuple[str, T]] = ()) -> None:
        self._by_length: dict[int, dict[int, dict[int, T]]] = {4: {}, 6: {}}
        self._lengths: dict[int, list[int]] = {4: [], 6: []}
        for cidr, value in items:
            self.add(cidr, value)

    def add(self, cidr: str, value: T) -> None:
        (version, network), length = parse_cidr(cidr)
        if length not in self._by_length[version]:
            self._by_length[version][length] = {}
            self._lengths[version] = sorted(self._by_length[version], reverse=True)
        self._by_length[version][length].setdefault(network, value)  # the first file to list a range wins

    def __len__(self) -> int:
        return sum(len(t) for by_len in self._by_length.values() for t in by_len.values())

    def lookup(self, ip: IP) -> T | None:
        version, value = ip
        bits = 32 if version == 4 else 128
        tables = self._by_length[version]
        for length in self._lengths[version]:
            found = tables[length].get(value >> (bits - length) << (bits - length))
            if found is not None:
                return found
        return None


def read_network_file(path: Path | Traversable) -> Iterator[NetworkEntry]:
    """Rows ``cidr,owner,kind,source``; lines starting with '#' are comments (sources, dates)."""
    with path.open("r", encoding="utf-8") as fh:
        rows = csv.reader(line for line in fh if line.strip() and not line.startswith("#"))
        for row in rows:
            if row and row[0] != "cidr":
                cidr, owner, kind, source = [*row, "", "", ""][:4]
                yield NetworkEntry(cidr.strip(), owner.strip(), kind.strip() or "info", source.strip())


@dataclass(frozen=True, slots=True)
class OwnerInfo:
    name: str  # the owner's name as the geo data spells it ("Google LLC", "GOOGLE")
    asn: int | None  # the AS number the row is about; the number decides, the name is a fallback
    group: str  # "google", "apple", "relay", "microsoft", "yahoo", "security", "cloud"
    label: str  # what a person reads: "Google", "Proofpoint", "iCloud Private Relay partner (Akamai)"


def read_owner_rows(path: Path | Traversable) -> list[OwnerInfo]:
    """Rows ``name,asn,group,label`` in file order; a name may come back with another AS number."""
    rows = []
    with path.open("r", encoding="utf-8") as fh:
        for row in csv.reader(line for line in fh if line.strip() and not line.startswith("#")):
            if len(row) >= 4 and row[0] != "name":
                name, asn, group, label = (cell.strip() for cell in row[:4])
                rows.append(OwnerInfo(name, int(asn) if asn.isdigit() else None, group, label))
    return rows


class Networks:
    """The shipped (or updated) network lists, loaded once per process."""

    def __init__(self, entries: Iterable[NetworkEntry], owners: Iterable[OwnerInfo]) -> None:
        self.ranges: PrefixTable[NetworkEntry] = PrefixTable((e.cidr, e) for e in entries)
        self.owners: dict[str, OwnerInfo] = {}
        self._by_asn: dict[int, OwnerInfo] = {}
        for info in owners:
            self.owners.setdefault(info.name, info)
            if info.asn is not None:
                self._by_asn.setdefault(info.asn, info)

    @classmethod
    def load(cls, update_dir: str | Path | None = None) -> Networks:
        """Shipped files, each replaced by its namesake in ``update_dir`` when an update has written one."""
        entries: list[NetworkEntry] = []
        updated = Path(update_dir) if update_dir else None
        for name in NETWORK_FILES + UPDATE_ONLY_FILES:
            if updated is not None and (updated / name).is_file():
                entries.extend(read_network_file(updated / name))
            elif name in NETWORK_FILES:
                entries.extend(read_network_file(DATA / "networks" / name))
        return cls(entries, read_owner_rows(DATA / "asn-owners.csv"))

    def match(self, ip: IP | None) -> NetworkEntry | None:
        return None if ip is None else self.ranges.lookup(ip)

    def owner(self, name: str | None, asn: int | None = None) -> OwnerInfo | None:
        """Who runs a network: by its AS number first, then by the owner's name (an owner's AS not listed
        here, or a user's database with names and no numbers)."""
        found = self._by_asn.get(asn) if asn is not None else None
        return found or (self.owners.get(name) if name else None)

    def asn_for(self, name: str | None) -> int | None:
        info = self.owners.get(name) if name else None
        return info.asn if info else None
