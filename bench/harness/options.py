"""The pixel benchmark's options, which soak.py and faults.py reuse for their own runs."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from harness.common import TRUSTED_PROXY


@dataclass(frozen=True)
class Options:
    seconds: float
    warmup: float
    connections: int
    workers: int
    messages: int
    database_url: str | None
    latency_seconds: float
    latency_connections: int
    server_cpu: int
    load_cpu: int
    skip_nginx: bool
    skip_naive: bool
    skip_latency: bool
    wait_idle: float
    as_json: bool
    keep: bool
    strict: bool
    mix: str = "plain"
    ips: int = 5000
    compare_enrichment: bool = False
    rounds: int = 2


def parse_args(argv: list[str] | None = None, description: str | None = None) -> Options:
    """The pixel benchmark's command line; soak.py and faults.py take its defaults with a few set."""
    parser = argparse.ArgumentParser(
        description=description, epilog="See bench/README.md for what each figure means."
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="Measuring window per server (10).")
    parser.add_argument("--warmup", type=float, default=2.0, help="Load before the window opens (2).")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (64).")
    parser.add_argument("--workers", type=int, default=1, help="deadpixel worker processes (1).")
    parser.add_argument("--messages", type=int, default=1000, help="Distinct pixel URLs in rotation (1000).")
    parser.add_argument(
        "--database-url",
        help="PostgreSQL URL for deadpixel, e.g. postgresql://postgres@127.0.0.1:5432/test; the run uses a "
        "fresh schema that is dropped afterwards. Default: SQLite in a temporary data dir.",
    )
    parser.add_argument("--latency-seconds", type=float, help="Length of the latency run (--seconds).")
    parser.add_argument("--latency-connections", type=int, help="Latency client connections (--connections).")
    parser.add_argument("--server-cpu", type=int, default=0, help="Core the servers are pinned to (0).")
    parser.add_argument("--load-cpu", type=int, default=1, help="Core the load generators are pinned to (1).")
    parser.add_argument("--skip-nginx", action="store_true", help="Do not measure nginx.")
    parser.add_argument("--skip-naive", action="store_true", help="Do not measure the naive tracker.")
    parser.add_argument("--skip-latency", action="store_true", help="Do not measure deadpixel's latency.")
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=60.0,
        help="Before each measurement, wait up to this many seconds for the machine to be idle (60; 0: no).",
    )
    parser.add_argument(
        "--mix",
        choices=("plain", "realistic"),
        default="plain",
        help="plain: bare GETs of the pixel URLs (default). realistic: each request also carries "
        "X-Forwarded-For with one of --ips public addresses and a User-Agent from the mail user-agent data "
        f"file, and deadpixel trusts {TRUSTED_PROXY} as its proxy.",
    )
    parser.add_argument("--ips", type=int, default=5000, help="Client addresses of --mix realistic (5000).")
    parser.add_argument(
        "--compare-enrichment",
        action="store_true",
        help="Measure deadpixel with DEADPIXEL_ENRICHMENT=false and with enrichment on, alternately, and "
        "compare their ratios to nginx (target: within 10%%).",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="With --compare-enrichment: runs of each setting, in the order off, on, on, off, ... (2).",
    )
    parser.add_argument("--json", dest="as_json", action="store_true", help="Print JSON instead of tables.")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary dir (logs, databases).")
    parser.add_argument("--strict", action="store_true", help="Exit 1 when a performance target is missed.")
    args = parser.parse_args(argv)
    if args.database_url and not args.database_url.startswith(("postgres://", "postgresql")):
        parser.error("--database-url takes a postgresql:// URL (SQLite is the default)")
    if args.server_cpu == args.load_cpu:
        parser.error("--server-cpu and --load-cpu must differ")
    if args.ips < 1 or args.rounds < 1 or args.messages < 1:
        parser.error("--ips, --rounds and --messages must be at least 1")
    return Options(
        seconds=args.seconds,
        warmup=args.warmup,
        connections=args.connections,
        workers=args.workers,
        messages=args.messages,
        database_url=args.database_url,
        latency_seconds=args.latency_seconds or args.seconds,
        latency_connections=args.latency_connections or args.connections,
        server_cpu=args.server_cpu,
        load_cpu=args.load_cpu,
        skip_nginx=args.skip_nginx,
        skip_naive=args.skip_naive,
        skip_latency=args.skip_latency,
        wait_idle=args.wait_idle,
        as_json=args.as_json,
        keep=args.keep,
        strict=args.strict,
        mix=args.mix,
        ips=args.ips,
        compare_enrichment=args.compare_enrichment,
        rounds=args.rounds,
    )
