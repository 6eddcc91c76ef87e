"""Verdicts: human | proxy | prefetch | scanner | self, always with a reason a person can read.

Signals, strongest first (machine-opens.md section 9):
1. the sender's own addresses ("this is me") -> self;
2. request shape: a HEAD or other non-GET request, no user agent -> scanner;
3. documented scanner ranges (Microsoft EOP, Barracuda) -> scanner, whatever the user agent claims;
4. what the user agent names: image proxies, the Apple MPP and Gmail prefetch fingerprints, bots and tools;
5. seconds since the send, only when deadpixel knows the send time: faster than anyone reads mail, or fast and
   from a network whose owner runs scanners (security vendors, Microsoft, Google, clouds). Owners alone
   never decide: Microsoft and Google also carry real opens through their webmail proxies.
6. an obsolete browser from a hosting network; otherwise a person.
Machine fetches carry no place and no device: a proxy's or scanner's location and platform are not a reader's.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from deadpixel.enrich.geo import NOWHERE, GeoLookup, Place
from deadpixel.enrich.networks import IP, NetworkEntry, Networks, OwnerInfo, PrefixTable, format_ip, parse_ip
from deadpixel.enrich.useragent import UNKNOWN, UserAgentFacts, analyse_user_agent

TOO_FAST_SECONDS = 2.0
"""No one opens a message this soon after it was sent (Mautic's bot rule uses the same 2 s)."""
PROXY_PREFETCH_SECONDS = 10.0
"""A provider proxy fetching this fast prefetches on delivery (gophish #1390/#3086 saw 4 s): not an open."""
SUSPECT_NETWORK_SECONDS = 60.0
"""Scanners act on delivery; GMass calls opens under a minute likely false. Only with network evidence."""
SCANNER_GROUPS = frozenset({"security", "microsoft", "google", "cloud"})


class Verdict(NamedTuple):  # a tuple, not a frozen dataclass: built for every open, ten times cheaper
    kind: str  # one of KINDS
    reason: str
    rule: str = ""  # short stable id of the rule that decided, for counting and tests


@dataclass(frozen=True, slots=True)
class Address:
    """What the source address tells: place, a listed network, the network's owner, and whether it is ours."""

    ip: IP | None
    place: Place
    listed: NetworkEntry | None
    owner: OwnerInfo | None
    mine: str | None


NO_ADDRESS = Address(None, NOWHERE, None, None, None)


class Enrichment(NamedTuple):
    """Everything stored on an open, in the order of its columns (a tuple: built for every open)."""

    client: str
    device: str
    os: str
    country: str | None
    region: str | None
    city: str | None
    asn: int | None
    network_owner: str | None
    kind: str
    reason: str
    rule: str = ""


def _seconds(value: float | None) -> float | None:
    """A usable send-time offset, or None: unknown, negative (clock skew) or not a number never count."""
    if value is None or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        return None
    return float(value)


def _fmt_seconds(seconds: float) -> str:
    return f"{round(seconds, 1):g} s" if seconds < 10 else f"{round(seconds):d} s"


def _owner_text(place: Place, owner: OwnerInfo | None) -> str:
    if owner is not None:
        return f"{owner.label} network ({place.network_owner})" if place.network_owner else owner.label
    return f"network {place.network_owner}" if place.network_owner else "an unknown network"


class Enricher:
    """Turns one request's facts into an ``Enrichment``. Built once; ``enrich`` is pure and thread-safe."""

    def __init__(
        self, geo: GeoLookup, self_ips: Sequence[str] = (), networks: Networks | None = None
    ) -> None:
        self.geo = geo
        self.networks = networks if networks is not None else Networks.load()
        self._self: PrefixTable[str] = PrefixTable()
        for item in self_ips:
            self._self.add(item.strip(), item.strip())  # raises ValueError on a bad entry: a config error
        self._address = functools.lru_cache(maxsize=65536)(self._address_facts)
        self._timeless = functools.lru_cache(maxsize=16384)(self._enrich_timeless)

    def _address_facts(self, text: str | None) -> Address:
        """Everything an address alone tells, cached by its text (parsing it costs more than the cache
        lookup): readers, proxies and scanners come back again."""
        ip = parse_ip(text)
        if ip is None:
            return NO_ADDRESS
        place = self.geo.lookup_parsed(ip)
        listed = self.networks.match(ip)
        owner = self.networks.owner(place.network_owner, place.asn)
        return Address(ip, place, listed, owner, self._self.lookup(ip))

    def enrich(
        self,
        *,
        ip: str | None,
        user_agent: str | None,
        method: str = "GET",
        seconds_after_send: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Enrichment:
        return self.enrich_open(ip, user_agent, method, _prefetch_header(headers), seconds_after_send)

    def enrich_open(
        self,
        ip: str | None,
        user_agent: str | None,
        method: str,
        purpose: str | None,
        seconds_after_send: float | None,
    ) -> Enrichment:
        """``enrich`` with the facts as the ingest writer holds them, for every open; ``purpose`` is the
        word of a prefetch hint (``prefetch_word``), or None."""
        seconds = _seconds(seconds_after_send)
        # The verdict without a send time holds from some seconds after send on (see ``_timing_horizon``):
        # the same reader opening again, or a proxy fetching for many, is answered from the cache.
        timeless, horizon = self._timeless(ip, user_agent, method, purpose)
        if seconds is None or seconds >= horizon:
            return timeless
        headers = {"purpose": purpose} if purpose else None
        return self._enrichment(self._address(ip), user_agent, method, seconds, headers)

    def _enrich_timeless(
        self, ip: str | None, user_agent: str | None, method: str, purpose: str | None
    ) -> tuple[Enrichment, float]:
        address = self._address(ip)
        headers = {"purpose": purpose} if purpose else None
        enrichment = self._enrichment(address, user_agent, method, None, headers)
        return enrichment, _timing_horizon(address, analyse_user_agent(user_agent))

    def _enrichment(
        self,
        address: Address,
        user_agent: str | None,
        method: str,
        seconds: float | None,
        headers: Mapping[str, str] | None,
    ) -> Enrichment:
        facts = analyse_user_agent(user_agent)
        return enrichment_for(address.place, facts, self.classify(address, facts, method, seconds, headers))

    def address(self, ip: str | None) -> Address:
        return self._address(ip)

    def classify(
        self,
        address: Address,
        facts: UserAgentFacts,
        method: str = "GET",
        seconds: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Verdict:
        """The verdict from the facts of one request; ``seconds`` is None when the send time is unknown."""
        ip, place, listed, owner = address.ip, address.place, address.listed, address.owner
        if ip is not None and address.mine is not None:
            return Verdict(
                "self", f"from {format_ip(ip)}, one of your own addresses ({address.mine})", "self-ip"
            )
        method = (method or "GET").strip().upper()[:16]
        if method != "GET":
            return Verdict(
                "scanner",
                f"{method!r} request, not an image load" if method != "HEAD" else "HEAD request",
                "method",
            )
        purpose = _prefetch_header(headers) if headers else None
        if listed is not None and listed.kind == "scanner":
            when = f"{_fmt_seconds(seconds)} after send " if seconds is not None else ""
            return Verdict("scanner", f"{when}from {listed.owner} network {listed.cidr}", "network-listed")
        machine = facts.machine
        if machine is not None:
            if machine.kind == "proxy" and seconds is not None and seconds < PROXY_PREFETCH_SECONDS:
                reason = f"{machine.reason}, {_fmt_seconds(seconds)} after send: a prefetch on delivery"
                return Verdict("prefetch", reason, "proxy-fast")
            return Verdict(
                machine.kind, machine.reason + _corroboration(machine.rule, owner, listed), machine.rule
            )
        if purpose:
            return Verdict("prefetch", f"request says it is a {purpose} (Purpose header)", "header-purpose")
        if seconds is not None and seconds < TOO_FAST_SECONDS:
            source = _owner_text(place, owner)
            reason = f"{_fmt_seconds(seconds)} after send from {source}: faster than anyone reads mail"
            return Verdict("scanner", reason, "too-fast")
        suspect = owner is not None and owner.group in SCANNER_GROUPS
        if suspect and seconds is not None and seconds < SUSPECT_NETWORK_SECONDS and not _is_mail_app(facts):
            when = f"{_fmt_seconds(seconds)} after send "
            return Verdict("scanner", f"{when}from {_owner_text(place, owner)}", "network-fast")
        if suspect and facts.obsolete and owner is not None:
            reason = f"obsolete browser ({facts.info.client}) from {_owner_text(place, owner)}"
            return Verdict("scanner", reason, "obsolete-hosted")
        return Verdict("human", human_reason(facts), "human")


def enrichment_for(place: Place, facts: UserAgentFacts, verdict: Verdict) -> Enrichment:
    """What is stored for a request of any kind once its verdict is known: a machine's fetch carries no
    place and no device."""
    info = facts.info
    client, device, os_name = info.client, info.device, info.os
    if verdict.kind in ("human", "self"):
        return Enrichment(
            client, device, os_name, *_place_fields(place), verdict.kind, verdict.reason, verdict.rule
        )
    if verdict.kind == "scanner" and facts.machine is None:
        client = "Security scanner"  # the user agent was a disguise: it names no reader's client
    return Enrichment(
        client, UNKNOWN, UNKNOWN, None, None, None, place.asn, place.network_owner,
        verdict.kind, verdict.reason, verdict.rule,
    )  # fmt: skip


def _timing_horizon(address: Address, facts: UserAgentFacts) -> float:
    """How many seconds after send the timing rules of ``classify`` stop applying to this reader: from then
    on, its verdict is the one without a send time. A listed scanner network's reason always has the time."""
    if address.listed is not None and address.listed.kind == "scanner":
        return math.inf
    if address.owner is not None and address.owner.group in SCANNER_GROUPS:
        return SUSPECT_NETWORK_SECONDS
    if facts.machine is not None and facts.machine.kind == "proxy":
        return PROXY_PREFETCH_SECONDS
    return TOO_FAST_SECONDS


def _place_fields(place: Place) -> tuple[str | None, str | None, str | None, int | None, str | None]:
    return place.country, place.region, place.city, place.asn, place.network_owner


def _is_mail_app(facts: UserAgentFacts) -> bool:
    """A native mail client: Defender and gateways disguise themselves as browsers, not as Outlook."""
    return not facts.browser and facts.info.client != UNKNOWN


def _corroboration(rule: str, owner: OwnerInfo | None, listed: NetworkEntry | None) -> str:
    """Say so when the network agrees with what the user agent claims (Apple's relay list, Google's ASN)."""
    if listed is not None and rule in ("ua-apple-mpp", "ua-proxy", "ua-gmail-prefetch"):
        return f", from {listed.owner} {listed.cidr}"
    if owner is None:
        return ""
    if rule == "ua-apple-mpp" and owner.group in ("apple", "relay"):
        return f", from {owner.label}"
    if rule in ("ua-gmail-prefetch", "ua-proxy") and owner.group in ("google", "yahoo"):
        return f", from {owner.label}'s network"
    return ""


def _prefetch_header(headers: Mapping[str, str] | None) -> str | None:
    """Browsers mark speculative loads with Purpose / Sec-Purpose / X-Purpose / X-Moz (warmbly abuse.rs)."""
    if not headers:
        return None
    for name, value in headers.items():
        if name.lower() in ("purpose", "sec-purpose", "x-purpose", "x-moz"):
            word = prefetch_word(str(value))
            if word is not None:
                return word
    return None


def prefetch_word(hint: str | None) -> str | None:
    """What a speculative-load header's value says: prefetch, preview, prerender, or None."""
    if hint:
        lowered = hint.lower()
        for word in ("prefetch", "preview", "prerender"):
            if word in lowered:
                return word
    return None


@functools.lru_cache(maxsize=4096)
def human_reason(facts: UserAgentFacts) -> str:
    """Why a request with no machine signal is a person's: what its user agent says it is."""
    info = facts.info
    if info.client == UNKNOWN:
        return "user agent not recognised; no machine signal"
    if facts.browser:
        return f"{info.client}: a browser, no machine signal"
    guess = " (likely: other apps send the same user agent)" if info.guessed else ""
    return f"{info.client}{guess}: a mail client, no machine signal"
