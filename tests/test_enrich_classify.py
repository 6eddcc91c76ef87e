"""Verdicts: every corpus row, each rule with its reason, the message pattern, and properties of enrich()."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deadpixel.enrich import (
    DEVICES,
    KINDS,
    Enricher,
    Enrichment,
    GeoLookup,
    MessageEvent,
    Verdict,
    adjust_message_verdicts,
)

from .test_enrich_useragent import ROWS, USER_AGENTS

EOP_IP = "40.107.235.10"  # Microsoft EOP 40.107.0.0/16 (opencollective #3656 saw Defender from 40.107.235.*)
AZURE_IP = "20.72.100.79"  # Microsoft, outside the EOP list (laravel-passwordless-login #79)
BARRACUDA_IP = "209.222.82.10"  # Barracuda Email Gateway Defense 209.222.82.0/24
GOOGLE_IP = "66.249.84.1"  # AS15169
HOME_IP = "81.2.69.160"  # a UK broadband address (Andrews & Arnold), a reader at home
RELAY_IP = "172.224.226.1"  # Akamai, an iCloud Private Relay partner
GMAIL_PROXY = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/130.0.0.0 Safari/537.36"
)
THUNDERBIRD = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Thunderbird/128.0"


@pytest.fixture(scope="module")
def enricher() -> Enricher:
    return Enricher(GeoLookup(), self_ips=["203.0.113.0/24", "2001:db8:1::7"])


def needs_ip(row: dict[str, str]) -> bool:
    return "NEEDS IP" in row["note"]


UA_ROWS = [r for r in ROWS if not needs_ip(r)]
IP_ROWS = [r for r in ROWS if needs_ip(r)]


@pytest.mark.parametrize("row", UA_ROWS, ids=[r["user_agent"][:60] for r in UA_ROWS])
def test_kind_of_every_row_the_user_agent_decides(enricher: Enricher, row: dict[str, str]) -> None:
    result = enricher.enrich(ip=None, user_agent=row["user_agent"])
    assert result.kind == row["kind"], result.reason


# Rows whose note says only the network or timing decides, each with an address from the right network.
IP_CASES = {
    "Chrome/72.0.3626.109": [dict(ip=EOP_IP)],
    "Chrome/97.0.4692.99": [dict(ip="104.47.1.254"), dict(ip=AZURE_IP, seconds_after_send=12.0)],
    "MSIE 10.0; Windows NT 6.1; Trident/6.0)": [dict(ip="104.47.30.126")],
    "Chrome/103.0.0.0": [dict(ip=BARRACUDA_IP)],
    "Google-Safety": [dict(ip=GOOGLE_IP)],
    "MSIE 6.1; Windows XP": [dict(ip=HOME_IP)],
}


@pytest.mark.parametrize("row", IP_ROWS, ids=[r["user_agent"][:60] for r in IP_ROWS])
def test_kind_of_rows_that_need_the_ip(enricher: Enricher, row: dict[str, str]) -> None:
    cases = next(c for token, c in IP_CASES.items() if token in row["user_agent"])
    for case in cases:
        result = enricher.enrich(user_agent=row["user_agent"], **case)  # type: ignore[arg-type]
        assert result.kind == row["kind"], (case, result.reason)


def test_proxy_open_has_provider_client_and_no_place(enricher: Enricher) -> None:
    result = enricher.enrich(ip=GOOGLE_IP, user_agent=GMAIL_PROXY)
    assert (result.kind, result.client, result.device, result.os) == ("proxy", "Gmail", "unknown", "unknown")
    assert (result.country, result.region, result.city) == (None, None, None)
    assert (result.asn, result.network_owner) == (15169, "Google LLC")  # who fetched is evidence, kept
    assert "GoogleImageProxy" in result.reason


def test_human_open_keeps_place_and_device(enricher: Enricher) -> None:
    result = enricher.enrich(ip=HOME_IP, user_agent=THUNDERBIRD, seconds_after_send=3600)
    assert result == Enrichment(
        "Thunderbird", "desktop", "Windows", "GB", None, None, 20712, "Andrews & Arnold Ltd", "human",
        result.reason, "human",
    )  # fmt: skip


def test_apple_mpp(enricher: Enricher) -> None:
    result = enricher.enrich(ip=RELAY_IP, user_agent="Mozilla/5.0")
    assert (result.kind, result.client) == ("prefetch", "Apple Mail")
    assert result.reason.startswith("user agent is exactly 'Mozilla/5.0' (Apple Mail Privacy Protection)")
    assert "iCloud Private Relay" in result.reason and result.country is None


def test_eop_reason_names_time_and_network(enricher: Enricher) -> None:
    result = enricher.enrich(ip="40.107.1.1", user_agent=CHROME, seconds_after_send=3)
    assert (result.kind, result.reason) == (
        "scanner",
        "3 s after send from Microsoft EOP network 40.107.0.0/16",
    )
    assert result.client == "Security scanner" and result.country is None


def test_listed_scanner_network_beats_a_mail_client_user_agent(enricher: Enricher) -> None:
    assert enricher.enrich(ip="2a01:111:f400::5", user_agent=THUNDERBIRD).kind == "scanner"


@pytest.mark.parametrize("method", ["HEAD", "head", "POST", "OPTIONS", "PROPFIND"])
def test_non_get_is_a_scanner(enricher: Enricher, method: str) -> None:
    result = enricher.enrich(ip=HOME_IP, user_agent=THUNDERBIRD, method=method)
    assert result.kind == "scanner"
    assert result.reason == (
        "HEAD request" if method.upper() == "HEAD" else f"'{method.upper()}' request, not an image load"
    )


def test_missing_user_agent_is_a_scanner(enricher: Enricher) -> None:
    assert enricher.enrich(ip="104.47.1.254", user_agent=None).kind == "scanner"
    assert enricher.enrich(ip=HOME_IP, user_agent="").reason == "no user agent"


@pytest.mark.parametrize("ip", ["203.0.113.9", "2001:db8:1::7", "::ffff:203.0.113.200"])
def test_self_ips(enricher: Enricher, ip: str) -> None:
    result = enricher.enrich(ip=ip, user_agent=GMAIL_PROXY, method="HEAD", seconds_after_send=0.1)
    assert result.kind == "self" and "your own addresses" in result.reason


def test_bad_self_ip_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="not an IP"):
        Enricher(GeoLookup(), self_ips=["not-an-ip"])


@pytest.mark.parametrize(
    ("ip", "user_agent", "seconds", "kind_with_time", "rule"),
    [
        (HOME_IP, THUNDERBIRD, 0.8, "scanner", "too-fast"),
        (GOOGLE_IP, GMAIL_PROXY, 4.0, "prefetch", "proxy-fast"),
        (AZURE_IP, CHROME, 12.0, "scanner", "network-fast"),
        ("52.94.0.1", CHROME, 30.0, "scanner", "network-fast"),  # AWS
    ],
)
def test_timing_rules_apply_only_with_a_send_time(
    enricher: Enricher, ip: str, user_agent: str, seconds: float, kind_with_time: str, rule: str
) -> None:
    without = enricher.enrich(ip=ip, user_agent=user_agent, seconds_after_send=None)
    assert without.kind in ("human", "proxy")  # a hand-made pixel has no send time: no timing rule
    with_time = enricher.enrich(ip=ip, user_agent=user_agent, seconds_after_send=seconds)
    assert with_time.kind == kind_with_time, with_time.reason
    later = enricher.enrich(ip=ip, user_agent=user_agent, seconds_after_send=3600)
    assert later.kind == without.kind
    assert _rule(enricher, ip, user_agent, seconds) == rule


def _rule(enricher: Enricher, ip: str, user_agent: str, seconds: float) -> str:
    from deadpixel.enrich.useragent import analyse_user_agent

    return enricher.classify(enricher.address(ip), analyse_user_agent(user_agent), "GET", seconds).rule


@pytest.mark.parametrize("seconds", [-5.0, math.nan, math.inf, -math.inf])
def test_unusable_send_times_are_ignored(enricher: Enricher, seconds: float) -> None:
    assert enricher.enrich(ip=HOME_IP, user_agent=THUNDERBIRD, seconds_after_send=seconds).kind == "human"


def test_a_mail_client_on_a_microsoft_network_soon_after_send_is_a_person(enricher: Enricher) -> None:
    # Outlook on a Windows 365 Cloud PC egresses from Microsoft; scanners pose as browsers, not as Outlook.
    outlook = "Microsoft Office/16.0 (Microsoft Outlook 16.0.17928; Pro)"
    assert enricher.enrich(ip=AZURE_IP, user_agent=outlook, seconds_after_send=20).kind == "human"


def test_security_vendor_network_needs_timing(enricher: Enricher) -> None:
    barracuda_asn_ip = "64.235.150.1"  # Barracuda Networks' own AS, not the listed EGD ranges
    place = enricher.geo.lookup(barracuda_asn_ip)
    if place.asn != 15324:  # Barracuda Networks
        pytest.skip(f"geo data maps {barracuda_asn_ip} to {place.network_owner}")
    assert enricher.enrich(ip=barracuda_asn_ip, user_agent=CHROME).kind == "human"
    assert enricher.enrich(ip=barracuda_asn_ip, user_agent=CHROME, seconds_after_send=20).kind == "scanner"


def test_obsolete_browser_from_a_hosting_network(enricher: Enricher) -> None:
    ie6 = "Mozilla/4.0 (compatible; MSIE 6.1; Windows XP; .NET CLR 1.1.4322; .NET CLR 2.0.50727)"
    assert enricher.enrich(ip="52.94.0.1", user_agent=ie6).kind == "scanner"
    assert enricher.enrich(ip=HOME_IP, user_agent=ie6).kind == "human"


def test_purpose_header_marks_a_prefetch(enricher: Enricher) -> None:
    result = enricher.enrich(ip=HOME_IP, user_agent=CHROME, headers={"Sec-Purpose": "prefetch;prerender"})
    assert result.kind == "prefetch"


# --- the pattern across one message's events ---------------------------------------------------------------

HUMAN = Verdict("human", "Webmail (Chrome): a browser, no machine signal", "human")
SCANNER = Verdict("scanner", "no user agent", "ua-missing")


def test_browser_fetch_next_to_a_scanner_from_the_same_network_is_a_scanner() -> None:
    events = [
        MessageEvent(100.0, "104.47.1.254", SCANNER),
        MessageEvent(104.0, "104.47.1.0", HUMAN),  # truncated address, same /24
        MessageEvent(104.5, "81.2.69.160", HUMAN),  # another network: a person
        MessageEvent(500.0, "104.47.1.7", HUMAN),  # same network, long after: left alone
    ]
    kinds = [v.kind for v in adjust_message_verdicts(events)]
    assert kinds == ["scanner", "scanner", "human", "human"]
    assert "same network 104.47.1.0/24" in adjust_message_verdicts(events)[1].reason


def test_message_rule_works_backwards_in_time_and_ignores_other_kinds() -> None:
    proxy = Verdict("proxy", "user agent names Gmail image proxy", "ua-proxy")
    events = [
        MessageEvent(10.0, "2001:db8:5::1", HUMAN),
        MessageEvent(11.0, "2001:db8:5:ffff::9", SCANNER),  # same /48, a second later
        MessageEvent(12.0, "2001:db8:5::2", proxy),
        MessageEvent(13.0, None, HUMAN),
    ]
    assert [v.kind for v in adjust_message_verdicts(events)] == ["scanner", "scanner", "proxy", "human"]


def test_message_rule_does_not_chain() -> None:
    events = [MessageEvent(t, "198.51.100.1", HUMAN) for t in (40.0, 70.0, 100.0)]
    events.insert(0, MessageEvent(10.0, "198.51.100.2", SCANNER))
    assert [v.kind for v in adjust_message_verdicts(events)] == ["scanner", "scanner", "human", "human"]


# --- properties ---------------------------------------------------------------------------------------------

IPS = st.one_of(
    st.none(),
    st.ip_addresses().map(str),
    st.text(max_size=60),
    st.sampled_from(
        ["", "::ffff:1.2.3.4", "1.2.3.4%eth0", "[::1]", "1.2.3", "01.2.3.4", "999.1.1.1", "::", "0.0.0.0"]
    ),
    st.builds(lambda s, n: s * n, st.text(min_size=1, max_size=4), st.integers(0, 100_000)),
)
SECONDS = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**12), 10**12))
METHODS = st.one_of(st.sampled_from(["GET", "HEAD", "get", "", "POST"]), st.text(max_size=40))


@settings(max_examples=300, deadline=1000)
@given(ip=IPS, user_agent=USER_AGENTS, method=METHODS, seconds=SECONDS)
@pytest.mark.slow
def test_enrich_never_raises_and_returns_valid_values(
    enricher: Enricher, ip: str | None, user_agent: str | None, method: str, seconds: float | None
) -> None:
    result = enricher.enrich(ip=ip, user_agent=user_agent, method=method, seconds_after_send=seconds)
    assert result.kind in KINDS and result.device in DEVICES
    assert result.reason and len(result.reason) < 600 and result.reason.isprintable()
    assert result.client.isprintable() and "\x00" not in result.client
    assert result.country is None or (len(result.country) == 2 and result.country.isupper())
    if result.kind in ("proxy", "prefetch", "scanner"):
        assert (result.country, result.region, result.city, result.device) == (None, None, None, "unknown")


NEAR_HORIZON = st.one_of(
    st.none(), st.floats(0, 120, allow_nan=False), st.sampled_from([1.9, 2.0, 9.99, 10.0, 59.9, 60.0, 3600.0])
)


@settings(max_examples=300, deadline=1000)
@given(
    ip=st.one_of(IPS, st.sampled_from([EOP_IP, BARRACUDA_IP, AZURE_IP, GOOGLE_IP, HOME_IP, RELAY_IP])),
    user_agent=st.one_of(USER_AGENTS, st.sampled_from([GMAIL_PROXY, CHROME, THUNDERBIRD])),
    method=st.sampled_from(["GET", "HEAD", "get"]),
    first=NEAR_HORIZON,
    then=NEAR_HORIZON,
    purpose=st.sampled_from([None, "prefetch"]),
)
def test_a_cached_verdict_is_the_verdict_at_that_time(
    enricher: Enricher,
    ip: str | None,
    user_agent: str | None,
    method: str,
    first: float | None,
    then: float | None,
    purpose: str | None,
) -> None:
    """Verdicts past every timing rule are cached: an earlier open of the same reader, at another time,
    must never decide a later one's verdict or reason."""
    from deadpixel.enrich.useragent import analyse_user_agent

    headers = {"purpose": purpose} if purpose else None
    enricher.enrich(ip=ip, user_agent=user_agent, method=method, seconds_after_send=first, headers=headers)
    got = enricher.enrich(
        ip=ip, user_agent=user_agent, method=method, seconds_after_send=then, headers=headers
    )
    expected = enricher.classify(enricher.address(ip), analyse_user_agent(user_agent), method, then, headers)
    assert (got.kind, got.reason, got.rule) == (expected.kind, expected.reason, expected.rule)
