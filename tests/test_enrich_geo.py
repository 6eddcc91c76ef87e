"""Offline geo (real lookups in the shipped data), the optional .mmdb, network lists, update parsers."""

from __future__ import annotations

import json
import re
import socket
from datetime import date
from importlib import resources
from pathlib import Path

import pytest

from deadpixel.enrich import GeoLookup, Networks, Place
from deadpixel.enrich.geo import builtin_data_info, builtin_data_source
from deadpixel.enrich.networks import PrefixTable, format_ip, parse_cidr, parse_ip
from deadpixel.enrich.update import (
    parse_apple_egress,
    parse_google_prefixes,
    parse_microsoft_endpoints,
    update_networks,
)


@pytest.fixture(scope="module")
def geo() -> GeoLookup:
    return GeoLookup()


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a socket fails the test: lookups must be offline."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access during a lookup")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.mark.usefixtures("no_network")
@pytest.mark.parametrize(
    ("ip", "country", "asn", "owner"),
    [
        ("8.8.8.8", "US", 15169, "Google LLC"),
        ("2001:4860:4860::8888", None, 15169, "Google LLC"),  # anycast: its country varies by snapshot
        ("1.1.1.1", "AU", 13335, "Cloudflare, Inc."),
        ("17.58.0.1", "US", 714, "Apple Inc."),
        ("81.2.69.160", "GB", 20712, "Andrews & Arnold Ltd"),
        ("::ffff:8.8.8.8", "US", 15169, "Google LLC"),
        ("40.107.0.1", None, 8075, "Microsoft Corporation"),
        ("2a01:111:f403:1::5", None, 8075, "Microsoft Corporation"),
    ],
)
def test_offline_country_and_network(
    geo: GeoLookup, ip: str, country: str | None, asn: int, owner: str
) -> None:
    place = geo.lookup(ip)
    assert (place.asn, place.network_owner) == (asn, owner)
    assert place.country == country if country else place.country is not None and len(place.country) == 2
    assert (place.region, place.city) == (None, None)  # only a user-supplied .mmdb has those


def test_builtin_data_says_its_source_and_date() -> None:
    info = builtin_data_info()
    dates = re.findall(r"\d{4}-\d{2}-\d{2}", info)
    source = builtin_data_source()
    assert dates == [source["date"]]  # one date, the snapshot's: `deadpixel doctor` reads it
    assert date.fromisoformat(source["date"]) == min(date.fromisoformat(p["date"]) for p in source["parts"])
    for part in source["parts"]:
        assert part["package"] in info and part["licence"] == "CC-BY-4.0"
        assert (resources.files("deadpixel.enrich") / "data" / "geo" / part["file"]).is_file()
    notice = (resources.files("deadpixel.enrich") / "data" / "geo" / "NOTICE").read_text(encoding="utf-8")
    assert "db-ip.com" in notice and "routeviews.org" in notice and "nro.net" in notice


@pytest.mark.parametrize(
    "ip", [None, "", "garbage", "10.0.0.1", "127.0.0.1", "::1", "192.168.1.1", "1.2.3", "x" * 5000]
)
def test_private_and_invalid_addresses_have_no_place(geo: GeoLookup, ip: str | None) -> None:
    assert geo.lookup(ip) == Place(None, None, None, None, None)


def test_lookups_are_cached_per_address(geo: GeoLookup) -> None:
    assert geo.lookup("8.8.8.8") is geo.lookup("8.8.8.8")
    assert geo.lookup("2001:4860:4860::8888") is geo.lookup("2001:4860:4860:0:0:0:0:8888")


def test_missing_mmdb_is_an_error_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        GeoLookup(str(tmp_path / "nope.mmdb"))


def test_user_mmdb_adds_region_and_city_and_wins_on_country(tmp_path: Path) -> None:
    mmdb_writer = pytest.importorskip("mmdb_writer")
    netaddr = pytest.importorskip("netaddr")
    writer = mmdb_writer.MMDBWriter(ip_version=6, database_type="GeoLite2-City", ipv4_compatible=True)
    record = {
        "country": {"iso_code": "GB"},
        "subdivisions": [{"iso_code": "ENG", "names": {"en": "England"}}],
        "city": {"names": {"en": "London", "de": "London"}},
    }
    writer.insert_network(netaddr.IPSet(["81.2.69.0/24"]), record)
    writer.insert_network(netaddr.IPSet(["8.8.8.0/24"]), {"country": {"iso_code": "DE"}})
    path = tmp_path / "city.mmdb"
    writer.to_db_file(str(path))
    lookup = GeoLookup(str(path))
    try:
        assert lookup.lookup("81.2.69.160") == Place("GB", "England", "London", 20712, "Andrews & Arnold Ltd")
        assert lookup.lookup("8.8.8.8") == Place("DE", None, None, 15169, "Google LLC")
        assert lookup.lookup("9.9.9.9").country == "US"  # not in the file: the built-in data answers
    finally:
        lookup.close()


# --- addresses and networks ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.2.3.4", "1.2.3.4"),
        ("::ffff:1.2.3.4", "1.2.3.4"),
        ("2001:DB8::1", "2001:db8::1"),
        ("1.2.3", None),
        ("01.2.3.4", None),
        ("1.2.3.4 ", None),
        ("[::1]", None),
        ("fe80::1%eth0", None),
        (None, None),
    ],
)
def test_parse_ip_is_strict(text: str | None, expected: str | None) -> None:
    parsed = parse_ip(text)
    assert (format_ip(parsed) if parsed else None) == expected


def test_parse_cidr() -> None:
    assert parse_cidr("40.107.1.2/16") == parse_cidr("40.107.0.0/16")
    assert parse_cidr("2a01:111:f400::/48")[1] == 48
    for bad in ("40.107.0.0/33", "nope/8", "1.2.3.4/x", ""):
        with pytest.raises(ValueError):
            parse_cidr(bad)


def test_prefix_table_longest_match() -> None:
    table: PrefixTable[str] = PrefixTable(
        [("10.0.0.0/8", "wide"), ("10.1.0.0/16", "narrow"), ("2001:db8::/32", "v6")]
    )
    assert table.lookup(parse_ip("10.1.2.3")) == "narrow"  # type: ignore[arg-type]
    assert table.lookup(parse_ip("10.2.2.3")) == "wide"  # type: ignore[arg-type]
    assert table.lookup(parse_ip("2001:db8:ffff::1")) == "v6"  # type: ignore[arg-type]
    assert table.lookup(parse_ip("11.0.0.1")) is None  # type: ignore[arg-type]
    assert len(table) == 3


@pytest.mark.parametrize(
    ("ip", "owner"),
    [
        ("40.107.0.1", "Microsoft EOP"),
        ("40.93.255.255", "Microsoft EOP"),
        ("52.238.78.88", "Microsoft EOP"),
        ("104.47.127.1", "Microsoft EOP"),
        ("2a01:111:f403:1::5", "Microsoft EOP"),
        ("209.222.82.200", "Barracuda Email Gateway Defense"),
        ("3.24.133.129", "Barracuda Email Gateway Defense"),
        ("104.47.128.1", None),
        ("52.238.78.89", None),
        ("3.24.133.127", None),
        ("8.8.8.8", None),
    ],
)
def test_shipped_network_lists(ip: str, owner: str | None) -> None:
    found = Networks.load().match(parse_ip(ip))
    assert (found.owner if found else None) == owner
    if found:
        assert found.kind == "scanner"


def test_owner_groups() -> None:
    networks = Networks.load()
    assert networks.owner("Google LLC", 15169).group == "google"  # type: ignore[union-attr]
    assert networks.owner("Google LLC", 396982).group == "cloud"  # type: ignore[union-attr]  # the number decides
    assert networks.owner("Google LLC", 99999999).group == "google"  # type: ignore[union-attr]  # else the name
    assert networks.owner("GOOGLE").group == "google"  # type: ignore[union-attr]  # GeoLite2's spelling
    assert networks.owner("AKAMAI-AS").group == "relay"  # type: ignore[union-attr]
    assert networks.owner("Proofpoint, Inc.").group == "security"  # type: ignore[union-attr]
    assert networks.owner(None, asn=8075).group == "microsoft"  # type: ignore[union-attr]
    assert networks.owner("Andrews & Arnold Ltd", 20712) is None


@pytest.mark.parametrize(
    ("ip", "group"),
    [
        ("8.8.8.8", "google"),
        ("66.249.84.1", "google"),
        ("17.58.0.1", "apple"),
        ("172.224.224.40", "relay"),
        ("104.16.1.1", "relay"),
        ("151.101.1.1", "relay"),
        ("40.107.0.1", "microsoft"),
        ("52.94.0.1", "cloud"),
        ("64.235.150.1", "security"),
    ],
)
def test_the_builtin_data_finds_the_owners_verdicts_rely_on(geo: GeoLookup, ip: str, group: str) -> None:
    place = geo.lookup(ip)
    owner = Networks.load().owner(place.network_owner, place.asn)
    assert owner is not None and owner.group == group, place


# --- update: parsing the official lists (no network: the fetch is replaced) -------------------------------

APPLE_CSV = (
    "172.224.224.0/27,GB,GB-EN,London,\n"
    "172.224.224.32/27,GB,GB-EN,London,\n"
    "2a02:26f7:b3c0:4000::/64,GB,GB-EN,London,\n"
)
GOOGLE_JSON = json.dumps(
    {
        "creationTime": "x",
        "prefixes": [{"ipv4Prefix": "66.249.84.0/24"}, {"ipv6Prefix": "2001:4860:4801::/64"}],
    }
)
MICROSOFT_JSON = json.dumps(
    [
        {"id": 9, "ips": ["13.107.6.152/31"]},
        {"id": 10, "ips": ["40.92.0.0/15", "40.107.0.0/16", "2a01:111:f400::/48", "52.238.78.88/32"]},
    ]
)  # fmt: skip


def test_update_parsers() -> None:
    assert parse_apple_egress(APPLE_CSV) == ["172.224.224.0/26", "2a02:26f7:b3c0:4000::/64"]
    assert parse_google_prefixes(GOOGLE_JSON) == ["66.249.84.0/24", "2001:4860:4801::/64"]
    assert parse_microsoft_endpoints(MICROSOFT_JSON) == [
        "40.92.0.0/15",
        "40.107.0.0/16",
        "52.238.78.88/32",
        "2a01:111:f400::/48",
    ]


def test_update_writes_files_that_replace_the_shipped_ones(tmp_path: Path) -> None:
    def fake_fetch(url: str) -> str:
        if "icloud" in url:
            return APPLE_CSV
        if "google" in url:
            return GOOGLE_JSON
        return json.dumps([{"id": 10, "ips": ["40.107.0.0/16"]}])

    counts, failures = update_networks(tmp_path, fetch=fake_fetch, mirror="")
    assert failures == {}
    assert counts == {
        "microsoft-eop.csv": 1,
        "apple-private-relay.csv": 2,
        "google-user-triggered-fetchers.csv": 2,  # the same two ranges in each of Google's three files
    }
    networks = Networks.load(update_dir=tmp_path)
    assert (
        networks.match(parse_ip("104.47.1.1")) is None
    )  # the updated EOP file no longer lists 104.47.0.0/17
    assert networks.match(parse_ip("40.107.9.9")).owner == "Microsoft EOP"  # type: ignore[union-attr]
    relay = networks.match(parse_ip("172.224.224.40"))
    assert relay is not None and (relay.owner, relay.kind) == ("iCloud Private Relay", "info")
    assert (
        networks.match(parse_ip("209.222.82.1")) is not None
    )  # Barracuda has no update source: shipped file stays


def test_update_keeps_old_files_when_a_source_fails(tmp_path: Path) -> None:
    def broken(url: str) -> str:
        raise OSError("no route to host")

    counts, failures = update_networks(tmp_path, fetch=broken, mirror="")
    assert counts == {}
    assert set(failures) == {
        "microsoft-eop.csv",
        "apple-private-relay.csv",
        "google-user-triggered-fetchers.csv",
    }
    assert all("no route to host" in reason for reason in failures.values())
    assert not list(tmp_path.iterdir())
