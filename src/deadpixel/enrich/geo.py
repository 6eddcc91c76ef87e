"""Country and network owner offline, out of the box; region and city from a user-supplied .mmdb file.

The built-in data is geoip2fast's country+ASN file for IPv4 and IPv6 (built from MaxMind GeoLite2, shipped
inside the wheel), so country and network owner work with no account, no download and no network call. It
carries AS organisation names but not AS numbers; numbers come from our own table of the owners that matter
(``data/asn-owners.csv``) or from an ASN-capable .mmdb. A MaxMind or DB-IP .mmdb named by
``DEADPIXEL_GEOIP_DATABASE`` adds region and city and, being the user's own fresher copy, wins on country.
Lookups are cached per address: the same readers and proxies come back again and again.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from deadpixel.enrich.networks import IP, format_ip, parse_ip, read_owner_file

_BUILTIN_FILE = "geoip2fast-asn-ipv6.dat.gz"
_NOT_OWNERS = frozenset({"", "<unknown>", "IANA.ORG"})


@dataclass(frozen=True, slots=True)
class Place:
    country: str | None  # ISO 3166 alpha-2
    region: str | None
    city: str | None
    asn: int | None
    network_owner: str | None


NOWHERE = Place(None, None, None, None, None)

_builtin_lock = threading.Lock()
_builtin: Any = None


def _load_builtin() -> Any:
    """geoip2fast keeps its tables in module globals, so one loaded copy serves the whole process.

    The file is opened by absolute path: given a bare name, geoip2fast would first look in the current
    directory, and its files are pickles.
    """
    global _builtin
    with _builtin_lock:
        if _builtin is None:
            import geoip2fast  # type: ignore[import-untyped]

            path = resources.files(geoip2fast) / _BUILTIN_FILE
            _builtin = geoip2fast.GeoIP2Fast(geoip2fast_data_file=str(path))
        return _builtin


def builtin_data_info() -> str:
    """Which snapshot the built-in data is, e.g. 'MAXMIND:GeoLite2-CountryASN-IPv4IPv6-en-20240618'."""
    return str(_load_builtin().get_database_info().get("source_info", "unknown"))


def _country(code: object) -> str | None:
    if isinstance(code, str) and len(code) == 2 and code.isascii() and code.isalpha():
        return code.upper()
    return None


def _name(value: object) -> str | None:
    if isinstance(value, dict):
        names = value.get("names")
        if isinstance(names, dict):
            name = names.get("en") or next(iter(names.values()), None)
            return str(name) if name else None
    return None


class GeoLookup:
    """Built once per process; ``lookup`` never raises and never touches the network."""

    def __init__(self, mmdb_path: str | None = None, *, cache_size: int = 65536) -> None:
        self._fast = _load_builtin()
        self._asn_numbers = {
            name: info.asn
            for name, info in read_owner_file(
                resources.files("deadpixel.enrich") / "data" / "asn-owners.csv"
            ).items()
            if info.asn is not None
        }
        self._mmdb: Any = None
        if mmdb_path:
            import maxminddb

            if not Path(mmdb_path).is_file():
                raise FileNotFoundError(f"GeoIP database {mmdb_path} does not exist")
            self._mmdb = maxminddb.open_database(mmdb_path)
        self._cached = functools.lru_cache(maxsize=cache_size)(self._lookup)

    def lookup(self, ip: str | None) -> Place:
        parsed = parse_ip(ip)
        return NOWHERE if parsed is None else self.lookup_parsed(parsed)

    def lookup_parsed(self, ip: IP) -> Place:
        """Lookup of an address parsed by ``networks.parse_ip``: one cache entry however it was written."""
        place: Place = self._cached(ip)
        return place

    def _lookup(self, parsed: IP) -> Place:
        ip = format_ip(parsed)
        found = self._fast.lookup(ip)
        if getattr(found, "is_private", False):
            return NOWHERE
        country = _country(getattr(found, "country_code", None))
        owner: str | None = getattr(found, "asn_name", "") or ""
        owner = None if owner in _NOT_OWNERS else owner
        asn = self._asn_numbers.get(owner) if owner else None
        region = city = None
        if self._mmdb is not None:
            record = self._mmdb_record(ip)
            country = _country((record.get("country") or {}).get("iso_code")) or country
            subdivisions = record.get("subdivisions") or [{}]
            region = _name(subdivisions[0]) if isinstance(subdivisions, list) else None
            city = _name(record.get("city"))
            if isinstance(record.get("autonomous_system_number"), int):
                asn = record["autonomous_system_number"]
                owner = str(record.get("autonomous_system_organization") or owner or "") or None
        return Place(country, region, city, asn, owner)

    def _mmdb_record(self, ip: str) -> dict[str, Any]:
        try:
            record = self._mmdb.get(ip)
        except (ValueError, TypeError):  # e.g. an IPv6 address in an IPv4-only database
            return {}
        return record if isinstance(record, dict) else {}

    def close(self) -> None:
        if self._mmdb is not None:
            self._mmdb.close()
