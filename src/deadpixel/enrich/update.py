"""Refresh the network lists from their official sources, by hand or from cron, with internet access.

    python -m deadpixel.enrich.update DIR      # then point Networks.load(update_dir=DIR) at it

Writes one CSV per source into DIR, in the same format as the shipped files, replacing a shipped file of the
same name. This is the only code in deadpixel.enrich that touches the network; nothing calls it at run time.
"""

from __future__ import annotations

import csv
import ipaddress
import json
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

APPLE_EGRESS_URL = "https://mask-api.icloud.com/egress-ip-ranges.csv"
GOOGLE_FETCHERS_URLS = (
    "https://developers.google.com/static/search/apis/ipranges/user-triggered-fetchers.json",
    "https://developers.google.com/static/search/apis/ipranges/user-triggered-fetchers-google.json",
)
MICROSOFT_ENDPOINTS_URL = "https://endpoints.office.com/endpoints/worldwide?clientrequestid={id}"
MICROSOFT_EOP_SET = 10  # *.mail.protection.outlook.com

Fetch = Callable[[str], str]


def fetch_text(url: str) -> str:
    request = urllib.request.Request(url, headers={"User-Agent": "deadpixel-network-update"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return str(response.read().decode("utf-8"))


def _collapse(cidrs: Iterable[str]) -> list[str]:
    """Merge adjacent ranges: Apple's list has a row per city, we only need the address space."""
    v4: list[ipaddress.IPv4Network] = []
    v6: list[ipaddress.IPv6Network] = []
    for cidr in cidrs:
        try:
            network = ipaddress.ip_network(cidr.strip(), strict=False)
        except ValueError:
            continue
        (v4 if network.version == 4 else v6).append(network)  # type: ignore[arg-type]
    return [str(n) for n in ipaddress.collapse_addresses(v4)] + [
        str(n) for n in ipaddress.collapse_addresses(v6)
    ]


def parse_apple_egress(text: str) -> list[str]:
    """Rows 'cidr,country,region,city,' -> collapsed CIDRs."""
    return _collapse(line.split(",", 1)[0] for line in text.splitlines() if line.strip())


def parse_google_prefixes(text: str) -> list[str]:
    """Google's ranges JSON: {"prefixes": [{"ipv4Prefix": ...} | {"ipv6Prefix": ...}]}."""
    prefixes = json.loads(text).get("prefixes", [])
    return _collapse(
        p.get("ipv4Prefix") or p.get("ipv6Prefix") or "" for p in prefixes if isinstance(p, dict)
    )


def parse_microsoft_endpoints(text: str, endpoint_set: int = MICROSOFT_EOP_SET) -> list[str]:
    """Microsoft 365 endpoints JSON: a list of sets {id, ips: [...]}; EOP is set 10."""
    sets = json.loads(text)
    return _collapse(
        ip for s in sets if isinstance(s, dict) and s.get("id") == endpoint_set for ip in s.get("ips", [])
    )


def write_network_file(path: Path, cidrs: list[str], owner: str, kind: str, source: str) -> int:
    """Write a network CSV atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8", newline="") as fh:
        fh.write(
            f"# {owner}: fetched from {source} on {datetime.now(UTC):%Y-%m-%d} by deadpixel.enrich.update\n"
        )
        writer = csv.writer(fh)
        writer.writerow(["cidr", "owner", "kind", "source"])
        writer.writerows([cidr, owner, kind, source] for cidr in cidrs)
    tmp.replace(path)
    return len(cidrs)


def update_networks(directory: Path, fetch: Fetch = fetch_text) -> tuple[dict[str, int], dict[str, str]]:
    """Fetch every official list into ``directory``; one failing source does not stop the others.

    Returns the ranges written per file and the reason for each source that could not be fetched.
    """
    jobs: list[tuple[str, Callable[[], list[str]], str, str, str]] = [
        (
            "microsoft-eop.csv",
            lambda: parse_microsoft_endpoints(fetch(MICROSOFT_ENDPOINTS_URL.format(id=uuid.uuid4()))),
            "Microsoft EOP",
            "scanner",
            "Microsoft 365 endpoints set 10",
        ),
        (
            "apple-private-relay.csv",
            lambda: parse_apple_egress(fetch(APPLE_EGRESS_URL)),
            "iCloud Private Relay",
            "info",
            APPLE_EGRESS_URL,
        ),
        (
            "google-user-triggered-fetchers.csv",
            lambda: [c for url in GOOGLE_FETCHERS_URLS for c in parse_google_prefixes(fetch(url))],
            "Google user-triggered fetchers",
            "info",
            "developers.google.com user-triggered-fetchers*.json",
        ),
    ]
    counts: dict[str, int] = {}
    failures: dict[str, str] = {}
    directory.mkdir(parents=True, exist_ok=True)
    for name, get, owner, kind, source in jobs:
        try:
            cidrs = get()
        except (OSError, ValueError) as exc:
            failures[name] = str(exc)
            continue
        if cidrs:  # an empty answer is an upstream problem, not "no ranges": keep what we had
            counts[name] = write_network_file(directory / name, cidrs, owner, kind, source)
        else:
            failures[name] = "the source answered with no ranges; kept the previous list"
    return counts, failures
