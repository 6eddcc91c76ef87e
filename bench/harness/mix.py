"""The requests a load sends: bare pixel GETs, or the realistic mix of client addresses and user agents."""

from __future__ import annotations

import csv
import ipaddress
import random
from dataclasses import dataclass
from pathlib import Path

from harness.common import REPO_DIR, TRUSTED_PROXY, BenchError
from harness.options import Options

# --mix realistic: the user agents of the mail user-agent data file (the shared copy when there is one),
# and client addresses that deadpixel believes because they come from a trusted proxy on loopback
# (common.TRUSTED_PROXY).
USER_AGENT_FILES = (REPO_DIR.parent / "shared" / "data" / "mail-user-agents.tsv",
                    REPO_DIR / "tests" / "data" / "mail-user-agents.tsv")  # fmt: skip


IP_SEED = "deadpixel bench client addresses"  # the same addresses in every run
# Networks whose opens the verdict rules know, with their share of the client addresses.
KNOWN_NETWORKS = (
    ("17.0.0.0/8", 0.20),  # Apple (Mail Privacy Protection fetches)
    ("66.249.80.0/20", 0.05),  # Google (Gmail's image proxy)
    ("40.107.0.0/16", 0.05),  # Microsoft Exchange Online Protection (scanners)
)


@dataclass(frozen=True)
class PixelRequest:
    path: str
    client_ip: str | None = None  # sent as X-Forwarded-For
    user_agent: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        if self.client_ip is None or self.user_agent is None:
            return {}
        return {"X-Forwarded-For": self.client_ip, "User-Agent": self.user_agent}

    def line(self) -> str:
        """As wrk_pixels.lua and steady_load.py read it."""
        if self.client_ip is None or self.user_agent is None:
            return self.path
        return f"{self.path}\t{self.client_ip}\t{self.user_agent}"


def user_agent_file() -> Path:
    for path in USER_AGENT_FILES:
        if path.is_file():
            return path
    raise BenchError(f"no mail user-agent data file: looked for {', '.join(map(str, USER_AGENT_FILES))}")


def read_user_agents(path: Path) -> list[str]:
    """The user_agent column of the data file, in its order."""
    with path.open(newline="", encoding="utf-8") as fh:
        rows = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        agents = [row["user_agent"] for row in rows if row.get("user_agent")]
    unsendable = [ua for ua in agents if "\t" in ua or not ua.isascii() or not ua.isprintable()]
    if unsendable or not agents:
        raise BenchError(f"{path}: no user agents, or some that cannot go in a header: {unsendable[:3]}")
    return agents


def client_ips(count: int) -> list[str]:
    """``count`` distinct public IPv4 addresses, the same in every run, in a shuffled order.

    KNOWN_NETWORKS get their share (as far as their size allows), the rest are anywhere in the public
    address space, so some verdicts come from the network and the geo data sees many countries.
    """
    rng = random.Random(IP_SEED)
    known = [ipaddress.IPv4Network(network) for network, _ in KNOWN_NETWORKS]
    chosen: set[int] = set()
    for network, (_, share) in zip(known, KNOWN_NETWORKS, strict=True):
        wanted = min(round(count * share), network.num_addresses // 2)
        first = int(network.network_address)
        while wanted > 0:
            address = first + rng.randrange(1, network.num_addresses - 1)
            if address not in chosen:
                chosen.add(address)
                wanted -= 1
    while len(chosen) < count:
        address = rng.getrandbits(32)
        ip = ipaddress.IPv4Address(address)
        if ip.is_global and not ip.is_multicast and not any(ip in network for network in known):
            chosen.add(address)
    ordered = sorted(chosen)
    rng.shuffle(ordered)
    return [str(ipaddress.IPv4Address(address)) for address in ordered]


def build_requests(paths: list[str], opts: Options) -> list[PixelRequest]:
    """The requests every server gets, in turn. The realistic mix pairs the i-th path, client address and
    user agent, each list taken round and round, over as many requests as there are addresses (or paths)."""
    if opts.mix == "plain":
        return [PixelRequest(path) for path in paths]
    ips = client_ips(opts.ips)
    agents = read_user_agents(user_agent_file())
    return [
        PixelRequest(paths[i % len(paths)], ips[i % len(ips)], agents[i % len(agents)])
        for i in range(max(len(paths), len(ips)))
    ]


def mix_description(opts: Options, requests: list[PixelRequest]) -> str:
    if opts.mix == "plain":
        return "plain: bare GETs, no User-Agent, no X-Forwarded-For"
    agents = len({request.user_agent for request in requests})
    ips = len({request.client_ip for request in requests})
    return (
        f"realistic: {ips:,} client IPs as X-Forwarded-For (deadpixel trusts {TRUSTED_PROXY}), "
        f"{agents} user agents from {user_agent_file()}, {len(requests):,} requests in turn"
    )
