"""Accuracy of the rules on a labelled user-agent file, and the cost of each call.

    python -m deadpixel.enrich.evaluate ../shared/data/mail-user-agents.tsv [--timing]

The file has the columns user_agent, client, kind (and optionally note). Client accuracy is measured on the
``human`` rows; kind accuracy on the rows whose kind the user agent alone decides (a note containing
"NEEDS IP" marks the others: only the network or timing can tell). Useful on your own logs too: label a sample
of user agents and see where the rules disagree.
"""

from __future__ import annotations

import argparse
import csv
import timeit
from pathlib import Path

from deadpixel.enrich.classify import Enricher
from deadpixel.enrich.geo import GeoLookup
from deadpixel.enrich.useragent import _cached_facts, parse_user_agent

GENERIC_CLIENTS = {"Browser webmail": "Webmail (", "Other mail client": ""}


def _client_ok(expected: str, got: str) -> bool:
    if expected in GENERIC_CLIENTS:
        prefix = GENERIC_CLIENTS[expected]
        if prefix:
            return got.startswith(prefix)
        known = ("Apple Mail", "Outlook", "Gmail", "Thunderbird", "Yahoo Mail", "unknown")
        return got not in known and not got.startswith("Webmail (")
    return got == expected


def accuracy(path: Path) -> list[str]:
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    enricher = Enricher(GeoLookup())
    lines = []
    humans = [r for r in rows if r["kind"] == "human"]
    client_misses = [
        r for r in humans if not _client_ok(r["client"], parse_user_agent(r["user_agent"]).client)
    ]
    decided = [r for r in rows if "NEEDS IP" not in r.get("note", "")]
    kind_misses = []
    for row in decided:
        got = enricher.enrich(ip=None, user_agent=row["user_agent"])
        if got.kind != row["kind"]:
            kind_misses.append((row, got))
    everything = sum(enricher.enrich(ip=None, user_agent=r["user_agent"]).kind == r["kind"] for r in rows)
    lines.append(f"client on human rows: {len(humans) - len(client_misses)}/{len(humans)}")
    lines.append(f"kind on rows the user agent decides: {len(decided) - len(kind_misses)}/{len(decided)}")
    lines.append(f"kind on all rows from the user agent alone (no IP): {everything}/{len(rows)}")
    lines += [
        f"  client miss: {r['client']!r} got {parse_user_agent(r['user_agent'])}" for r in client_misses
    ]
    lines += [
        f"  kind miss: {r['kind']} got {g.kind} ({g.reason}) {r['user_agent'][:80]}" for r, g in kind_misses
    ]
    return lines


def timing(user_agents: list[str]) -> list[str]:
    """Per-call costs in microseconds, each the best of 5 runs."""

    def best(stmt: object, number: int) -> float:
        return min(timeit.repeat(stmt, number=number, repeat=5)) / number * 1e6  # type: ignore[arg-type]

    geo = GeoLookup()
    enricher = Enricher(geo)
    ua = user_agents[len(user_agents) // 2]
    counter = iter(range(10**9))

    def uncached_parse() -> None:
        parse_user_agent(f"{ua} x{next(counter)}")  # a new string every call: a cache miss

    ips = [f"81.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}" for i in range(200_000)]
    ip_iter = iter(ips * 3)

    def uncached_geo() -> None:
        geo.lookup(next(ip_iter))

    geo.lookup("8.8.8.8")
    parse_user_agent(ua)
    results = {
        "parse_user_agent, cached": best(lambda: parse_user_agent(ua), 100_000),
        "parse_user_agent, uncached": best(uncached_parse, 2_000),
        "GeoLookup.lookup, cached": best(lambda: geo.lookup("8.8.8.8"), 100_000),
        "GeoLookup.lookup, uncached": best(uncached_geo, 20_000),
        "Enricher.enrich, all cached": best(
            lambda: enricher.enrich(ip="8.8.8.8", user_agent=ua, seconds_after_send=30.0), 50_000
        ),
    }
    _cached_facts.cache_clear()
    return [f"{name}: {micros:.2f} µs" for name, micros in results.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Accuracy and cost of deadpixel's enrichment rules.")
    parser.add_argument("tsv", type=Path, help="user_agent<TAB>client<TAB>kind[<TAB>...] file with a header")
    parser.add_argument("--timing", action="store_true", help="also measure per-call cost")
    args = parser.parse_args(argv)
    for line in accuracy(args.tsv):
        print(line)
    if args.timing:
        with args.tsv.open(encoding="utf-8", newline="") as fh:
            agents = [r["user_agent"] for r in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)]
        for line in timing(agents):
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
