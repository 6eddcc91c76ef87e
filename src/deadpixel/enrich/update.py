"""Refresh the network lists from their official sources, by hand or from cron, with internet access.

    deadpixel networks update                  # into the data dir, where the server reads them
    python -m deadpixel.enrich.update DIR      # then point Networks.load(update_dir=DIR) at it

Writes one CSV per list into DIR, in the same format as the shipped files, replacing a shipped file of the
same name. A list whose source fails (moved: 404; not the JSON or CSV it should be; no ranges) is not
written, so the previous file stays in use; the others are still updated, and the failure is one line that
names the list and the URL. ``DEADPIXEL_NETWORKS_MIRROR`` (a base URL) fetches every list from that host
instead, with the same paths: a mirror, or a test server. This is the only code in deadpixel.enrich that
touches the network; nothing calls it at run time.
"""

from __future__ import annotations

import csv
import ipaddress
import json
import os
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from deadpixel.errors import DeadpixelError

MIRROR_ENV = "DEADPIXEL_NETWORKS_MIRROR"
APPLE_EGRESS_URL = "https://mask-api.icloud.com/egress-ip-ranges.csv"
# Google moved these from /static/search/apis/ipranges/ in 2026 and added user-triggered-agents.json.
GOOGLE_IPRANGES = "https://developers.google.com/static/crawling/ipranges/"
GOOGLE_FETCHERS_URLS = tuple(
    GOOGLE_IPRANGES + name
    for name in (
        "user-triggered-fetchers.json",
        "user-triggered-fetchers-google.json",
        "user-triggered-agents.json",
    )
)
MICROSOFT_ENDPOINTS_URL = "https://endpoints.office.com/endpoints/worldwide?clientrequestid={id}"
MICROSOFT_EOP_SET = 10  # *.mail.protection.outlook.com

Fetch = Callable[[str], str]


class SourceError(DeadpixelError, ValueError):
    """A source answered, but not with what it should: it moved, or changed its format."""


def fetch_text(url: str) -> str:
    request = urllib.request.Request(url, headers={"User-Agent": "deadpixel-network-update"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return str(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        moved = " (moved or removed?)" if exc.code in (404, 410) else ""
        raise SourceError(f"HTTP {exc.code}{moved}") from exc
    except urllib.error.URLError as exc:
        raise OSError(str(exc.reason)) from exc
    except UnicodeDecodeError as exc:
        raise SourceError("not UTF-8 text") from exc


def mirrored(url: str, mirror: str | None) -> str:
    """``url`` with its scheme and host replaced by the mirror's (paths and queries kept)."""
    if not mirror:
        return url
    base, original = urlsplit(mirror), urlsplit(url)
    path = base.path.rstrip("/") + original.path
    return urlunsplit((base.scheme, base.netloc, path, original.query, ""))


def _json(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise SourceError(f"not JSON ({text[:40].strip()!r}...)") from exc


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
    rows = [line.split(",", 1)[0] for line in text.splitlines() if line.strip()]
    cidrs = _collapse(rows)
    if rows and not cidrs:
        raise SourceError(f"unexpected shape: no CIDR in the first column ({rows[0][:40]!r})")
    return cidrs


def parse_google_prefixes(text: str) -> list[str]:
    """Google's ranges JSON: {"prefixes": [{"ipv4Prefix": ...} | {"ipv6Prefix": ...}]}."""
    document = _json(text)
    prefixes = document.get("prefixes") if isinstance(document, dict) else None
    if not isinstance(prefixes, list):
        raise SourceError("unexpected shape: no 'prefixes' list")
    return _collapse(
        p.get("ipv4Prefix") or p.get("ipv6Prefix") or "" for p in prefixes if isinstance(p, dict)
    )


def parse_microsoft_endpoints(text: str, endpoint_set: int = MICROSOFT_EOP_SET) -> list[str]:
    """Microsoft 365 endpoints JSON: a list of sets {id, ips: [...]}; EOP is set 10."""
    sets = _json(text)
    if not isinstance(sets, list):
        raise SourceError("unexpected shape: not a list of endpoint sets")
    ips: list[str] = []
    for endpoints in sets:
        if isinstance(endpoints, dict) and endpoints.get("id") == endpoint_set:
            found = endpoints.get("ips")
            ips += [ip for ip in found if isinstance(ip, str)] if isinstance(found, list) else []
    return _collapse(ips)


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


@dataclass(frozen=True)
class NetworkSource:
    file: str  # the CSV written, named as the shipped one it replaces
    owner: str
    kind: str
    description: str  # the file's source column
    urls: tuple[str, ...]
    parse: Callable[[str], list[str]]


def sources() -> list[NetworkSource]:
    return [
        NetworkSource(
            "microsoft-eop.csv", "Microsoft EOP", "scanner", "Microsoft 365 endpoints set 10",
            (MICROSOFT_ENDPOINTS_URL.format(id=uuid.uuid4()),), parse_microsoft_endpoints,
        ),
        NetworkSource(
            "apple-private-relay.csv", "iCloud Private Relay", "info", APPLE_EGRESS_URL,
            (APPLE_EGRESS_URL,), parse_apple_egress,
        ),
        NetworkSource(
            "google-user-triggered-fetchers.csv", "Google user-triggered fetchers", "info",
            GOOGLE_IPRANGES + "user-triggered-*.json", GOOGLE_FETCHERS_URLS, parse_google_prefixes,
        ),
    ]  # fmt: skip


def update_networks(
    directory: Path, fetch: Fetch = fetch_text, mirror: str | None = None
) -> tuple[dict[str, int], dict[str, str]]:
    """Fetch every official list into ``directory``; one failing source does not stop the others.

    Returns the ranges written per file and, for each list that was not written, one line saying which
    source and URL failed and how. ``mirror`` (default: ``DEADPIXEL_NETWORKS_MIRROR``) replaces the hosts.
    """
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV) or None
    counts: dict[str, int] = {}
    failures: dict[str, str] = {}
    directory.mkdir(parents=True, exist_ok=True)
    for source in sources():
        cidrs: list[str] = []
        try:
            for original in source.urls:
                url = mirrored(original, mirror)
                try:
                    cidrs += source.parse(fetch(url))
                except (OSError, ValueError) as exc:
                    raise SourceError(f"{source.owner} from {url}: {exc}") from exc
        except SourceError as exc:
            failures[source.file] = f"{exc}; kept the previous list"
            continue
        if cidrs:  # an empty answer is an upstream problem, not "no ranges": keep what we had
            counts[source.file] = write_network_file(
                directory / source.file, _collapse(cidrs), source.owner, source.kind, source.description
            )
        else:
            urls = ", ".join(mirrored(url, mirror) for url in source.urls)
            failures[source.file] = f"{source.owner} from {urls}: no ranges; kept the previous list"
    return counts, failures


def main(argv: list[str] | None = None) -> int:
    """``python -m deadpixel.enrich.update DIR``: exit status 1 when any list could not be updated."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m deadpixel.enrich.update DIR", file=sys.stderr)
        return 2
    counts, failures = update_networks(Path(args[0]))
    for name, count in counts.items():
        print(f"{name}: {count} ranges")
    for name, reason in failures.items():
        print(f"{name}: not updated: {reason}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
