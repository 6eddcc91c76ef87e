"""Memory of a running server on a small box, and what the geo lookup costs.

One run of ``python bench/memory.py``:

1. **Server.** ``deadpixel serve --workers N`` (1 by default) on a fresh SQLite store, trusting 127.0.0.1 as
   its proxy. ``--opens`` opens (600) go to ``--messages`` tracked messages, each with a user agent from the
   mail user-agent data file (taken in turn) and an ``X-Forwarded-For`` address: public IPv4 addresses as
   bench/pixel.py makes them (Apple, Google and Microsoft networks among them) and one in four an IPv6
   address (Google's, Microsoft's and anywhere in 2000::/3), so the geo data, the network lists and
   ua-parser all do real work. Once every open is stored, PSS (proportional set size: a page shared by k
   processes counts 1/k, so shared pages are not counted twice) is summed over the server's processes from
   ``/proc/<pid>/smaps_rollup``.
2. **Baselines, same run, same machine.** A bare ``python3 -c`` that imports nothing, and a Python that
   imports deadpixel's enrichment and builds its parts one at a time, with PSS after each step: where a
   server's memory goes.
3. **Lookup speed.** Microseconds per uncached ``GeoLookup`` lookup and per uncached enrichment of an open
   (address and user agent both new), over addresses no cache has seen.

``python bench/memory.py [--workers N] [--opens N] [--json]``, about 20 seconds. Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import ipaddress
import json
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.common import HOST, TRUSTED_PROXY, BenchError, child_env, free_port
from harness.cpu import all_processes
from harness.mix import client_ips, read_user_agents, user_agent_file
from harness.processes import deadpixel_command, wait_until_ready
from harness.stores import create_pixels

TARGET_MIB = 100.0
IPV6_SHARE = 4  # every fourth open comes from an IPv6 address
IPV6_NETWORKS = ("2001:4860::/32", "2a01:111:f400::/48", "2a01:111:f403::/48")  # Google, Microsoft EOP
STORE_TIMEOUT = 30.0

# Run in a child Python: build the server's resident parts one at a time and print PSS after each.
STEPS = r"""
import json, sys
def pss():
    with open("/proc/self/smaps_rollup") as fh:
        return {k.rstrip(":"): int(v) for k, v, *_ in (line.split() for line in fh) if k.startswith("Pss")}
out = [("bare python", pss())]
import deadpixel.server.app
out.append(("+ import deadpixel.server.app (web, store, track)", pss()))
from deadpixel.enrich.useragent import warm_up
warm_up()
out.append(("+ ua-parser rules warmed up", pss()))
from deadpixel.enrich.geo import GeoLookup
geo = GeoLookup()
geo.lookup("8.8.8.8")
out.append(("+ built-in geo data, first lookup", pss()))
from deadpixel.enrich.networks import Networks
networks = Networks.load()
out.append(("+ network lists", pss()))
json.dump(out, sys.stdout)
"""

# Run in a child Python: uncached lookups over fresh addresses, µs each (best of three rounds).
SPEED = r"""
import json, random, sys, time
from deadpixel.enrich.classify import Enricher
from deadpixel.enrich.geo import GeoLookup
from deadpixel.enrich.useragent import warm_up
ips, agents = json.load(sys.stdin)
warm_up()
geo = GeoLookup()
geo.lookup("8.8.8.8")
best_geo = best_enrich = float("inf")
for _ in range(3):
    lookup = GeoLookup()
    start = time.perf_counter()
    for ip in ips:
        lookup.lookup(ip)
    best_geo = min(best_geo, (time.perf_counter() - start) / len(ips) * 1e6)
    enricher = Enricher(GeoLookup())
    start = time.perf_counter()
    for i, ip in enumerate(ips):
        enricher.enrich(ip=ip, user_agent=agents[i % len(agents)] + f" r{i}", seconds_after_send=None)
    best_enrich = min(best_enrich, (time.perf_counter() - start) / len(ips) * 1e6)
json.dump({"geo_us": best_geo, "enrich_us": best_enrich, "addresses": len(ips)}, sys.stdout)
"""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def ipv6_addresses(count: int, seed: str = "deadpixel memory bench v6") -> list[str]:
    """Global IPv6 addresses, the same in every run: a third in known networks, the rest in 2000::/3."""
    rng = random.Random(seed)
    known = [ipaddress.IPv6Network(n) for n in IPV6_NETWORKS]
    found: list[str] = []
    while len(found) < count:
        if len(found) % 3 == 0:
            network = known[len(found) % len(known)]
            address = ipaddress.IPv6Address(
                int(network.network_address) + rng.randrange(1, network.num_addresses - 1)
            )
        else:
            address = ipaddress.IPv6Address((0x2 << 125) | rng.getrandbits(125))
        if address.is_global:
            found.append(str(address))
    return found


def client_addresses(count: int) -> list[str]:
    v6 = ipv6_addresses(count // IPV6_SHARE + 1)
    v4 = client_ips(count)
    return [v6[i // IPV6_SHARE] if i % IPV6_SHARE == 0 else v4[i] for i in range(count)]


def family(root: int) -> list[int]:
    """``root`` and its descendants (uvicorn's worker processes)."""
    processes = all_processes()
    members, frontier = [root], [root]
    while frontier:
        parent = frontier.pop()
        children = [p.pid for p in processes.values() if p.ppid == parent and p.pid not in members]
        members.extend(children)
        frontier.extend(children)
    return members


def smaps_rollup(pid: int) -> dict[str, int]:
    """The kB counters of /proc/<pid>/smaps_rollup (Rss, Pss, Pss_Anon, Pss_File, ...)."""
    counters: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            name, value, *_ = line.split()
            counters[name.rstrip(":")] = int(value)
    return counters


def tree_memory(root: int) -> dict[str, Any]:
    """PSS, RSS and PSS split into anonymous and file-backed pages, summed over ``root``'s processes."""
    pids = family(root)
    totals = {"Pss": 0, "Rss": 0, "Pss_Anon": 0, "Pss_File": 0}
    for pid in pids:
        counters = smaps_rollup(pid)
        for key in totals:
            totals[key] += counters.get(key, 0)
    return {"processes": len(pids), **{key.lower() + "_mib": value / 1024 for key, value in totals.items()}}


def bare_python() -> dict[str, Any]:
    """A Python that imports nothing, measured as the server is (its own process, via smaps_rollup)."""
    child = subprocess.Popen([sys.executable, "-S", "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.3)
        return tree_memory(child.pid)
    finally:
        child.terminate()
        child.wait()


def steps() -> list[tuple[str, dict[str, int]]]:
    done = subprocess.run([sys.executable, "-c", STEPS], capture_output=True, text=True, check=True)
    return [(name, counters) for name, counters in json.loads(done.stdout)]


def lookup_speed(count: int) -> dict[str, float]:
    ips = [
        str(ipaddress.IPv4Address(a))
        for a in random.Random("speed").sample(range(1 << 24, 0xDF000000), count)
    ]
    ips[::IPV6_SHARE] = ipv6_addresses(len(ips[::IPV6_SHARE]), seed="speed v6")
    agents = read_user_agents(user_agent_file())
    done = subprocess.run(
        [sys.executable, "-c", SPEED],
        input=json.dumps([ips, agents]),
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(done.stdout)
    return result


def stored_opens(database: Path) -> int:
    with contextlib.closing(sqlite3.connect(database)) as conn:
        return int(conn.execute("SELECT count(*) FROM opens").fetchone()[0])


def run_server(opts: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    data_dir = workdir / "data"
    database = data_dir / "store.db"
    url = f"sqlite:///{database}"
    paths = create_pixels(data_dir, url, opts.messages, with_send_times=True)
    agents = read_user_agents(user_agent_file())
    addresses = client_addresses(opts.opens)
    port = free_port()
    log_file = workdir / "server.log"
    env = child_env() | {
        "DEADPIXEL_DATA_DIR": str(data_dir),
        "DEADPIXEL_DATABASE_URL": url,
        "DEADPIXEL_OPEN_CAP": "0",  # every open a row, so "all stored" is a count
        "DEADPIXEL_TRUSTED_PROXIES": TRUSTED_PROXY,
    }
    command = [deadpixel_command(), "serve", "--host", HOST, "--port", str(port)]
    command += ["--workers", str(opts.workers)]
    with log_file.open("ab") as output:
        server = subprocess.Popen(command, stdout=output, stderr=output, env=env, start_new_session=True)
    try:
        wait_until_ready(server, port, "deadpixel", log_file)
        idle = tree_memory(server.pid)
        conn = http.client.HTTPConnection(HOST, port, timeout=10)
        for i in range(opts.opens):
            headers = {"X-Forwarded-For": addresses[i], "User-Agent": agents[i % len(agents)]}
            conn.request("GET", paths[i % len(paths)], headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise BenchError(f"open {i} answered {response.status}")
        conn.close()
        deadline = time.monotonic() + STORE_TIMEOUT
        while (stored := stored_opens(database)) < opts.opens:
            if time.monotonic() > deadline:
                raise BenchError(f"only {stored} of {opts.opens} opens stored; see {log_file}")
            time.sleep(0.1)
        time.sleep(0.5)  # the writer's batch is committed; let the server settle
        with contextlib.closing(sqlite3.connect(database)) as db:
            countries = db.execute("SELECT count(DISTINCT country) FROM opens").fetchone()[0]
            owners = db.execute("SELECT count(DISTINCT network_owner) FROM opens").fetchone()[0]
        return {
            "idle": idle,
            "loaded": tree_memory(server.pid),
            "opens": opts.opens,
            "distinct_addresses": len(set(addresses)),
            "ipv6_addresses": sum(":" in a for a in addresses),
            "distinct_user_agents": len(set(agents)),
            "countries": countries,
            "network_owners": owners,
        }
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    server.kill()
                server.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--opens", type=int, default=600)
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--speed-addresses", type=int, default=20000)
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="deadpixel-bench-memory-") as tmp:
        try:
            result = {
                "server": run_server(opts, Path(tmp)),
                "bare_python": bare_python(),
                "steps": steps(),
                "speed": lookup_speed(opts.speed_addresses),
                "workers": opts.workers,
                "target_mib": TARGET_MIB,
            }
        except BenchError as exc:
            log(f"error: {exc}")
            return 1
    if opts.json:
        json.dump(result, sys.stdout, indent=2)
        print()
        return 0
    server, bare = result["server"], result["bare_python"]
    loaded = server["loaded"]
    print(
        f"opens: {server['opens']} from {server['distinct_addresses']} addresses "
        f"({server['ipv6_addresses']} IPv6), "
        f"{server['distinct_user_agents']} user agents; stored with {server['countries']} countries, "
        f"{server['network_owners']} network owners"
    )
    print(f"{'':44} {'PSS MiB':>8} {'anon':>7} {'file':>7} {'RSS MiB':>8}  processes")
    for label, row in (
        ("bare python3 (imports nothing)", bare),
        (f"deadpixel serve --workers {opts.workers}, idle", server["idle"]),
        (f"deadpixel serve --workers {opts.workers}, after opens", loaded),
    ):
        print(
            f"{label:44} {row['pss_mib']:8.1f} {row['pss_anon_mib']:7.1f} {row['pss_file_mib']:7.1f} "
            f"{row['rss_mib']:8.1f}  {row['processes']}"
        )
    print("\none Python building the server's parts in turn (PSS MiB, and what each step added):")
    previous = 0
    for name, counters in result["steps"]:
        print(f"  {name:44} {counters['Pss'] / 1024:7.1f}  +{(counters['Pss'] - previous) / 1024:.1f}")
        previous = counters["Pss"]
    speed = result["speed"]
    print(
        f"\nuncached, best of 3 over {speed['addresses']:,} fresh addresses: geo lookup "
        f"{speed['geo_us']:.2f} µs, enrichment of an open {speed['enrich_us']:.1f} µs"
    )
    verdict = "within" if loaded["pss_mib"] <= TARGET_MIB else "OVER"
    print(f"\nserver PSS {loaded['pss_mib']:.1f} MiB: {verdict} the {TARGET_MIB:.0f} MiB target")
    return 0 if loaded["pss_mib"] <= TARGET_MIB else 1


if __name__ == "__main__":
    sys.exit(main())
