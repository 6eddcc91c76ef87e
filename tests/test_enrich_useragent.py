"""User agent -> mail client, device, OS: table-driven over the corpus, structural cases, and properties."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deadpixel.enrich import DEVICES, ClientInfo, parse_user_agent
from deadpixel.enrich.useragent import MAX_LENGTH, analyse_user_agent

HERE = Path(__file__).resolve().parent
SHARED_CORPUS = HERE.parent.parent / "shared" / "data" / "mail-user-agents.tsv"
CORPUS = SHARED_CORPUS if SHARED_CORPUS.is_file() else HERE / "data" / "mail-user-agents.tsv"


def corpus() -> list[dict[str, str]]:
    with CORPUS.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))


ROWS = corpus()
HUMAN_ROWS = [r for r in ROWS if r["kind"] == "human"]
# The corpus says "Other mail client"; deadpixel names the client. Keyed by a token of the user agent.
OTHER_CLIENTS = {
    "Mailspring/": "Mailspring",
    "eM Client/": "eM Client",
    "Postbox/": "Postbox",
    "mailapp/": "MailApp",
    "MailMaster": "NetEase Mail Master",
    "Canary%20Mail/": "Canary Mail",
    "Foxmail/": "Foxmail",
    "Airmail ": "Airmail",
}


def expected_client(row: dict[str, str]) -> str:
    if row["client"] == "Other mail client":
        return next(name for token, name in OTHER_CLIENTS.items() if token in row["user_agent"])
    return row["client"]


@pytest.mark.parametrize("row", HUMAN_ROWS, ids=[r["user_agent"][:60] for r in HUMAN_ROWS])
def test_client_of_every_human_row(row: dict[str, str]) -> None:
    info = parse_user_agent(row["user_agent"])
    if row["client"] == "Browser webmail":
        assert info.client.startswith("Webmail ("), info
    else:
        assert info.client == expected_client(row), info


def test_corpus_is_the_one_we_think() -> None:
    assert len(ROWS) >= 60
    assert {r["kind"] for r in ROWS} == {"human", "proxy", "prefetch", "scanner"}


@pytest.mark.parametrize(
    ("user_agent", "expected"),
    [
        ("Outlook-iOS/709.2042344.prod.iphone (3.21.0)", ClientInfo("Outlook", "mobile", "iOS")),
        ("Outlook-iOS/723.4027091.prod.ipad (4.2348.1)", ClientInfo("Outlook", "tablet", "iOS")),
        (
            "MacOutlook/16.89.24091630 (ARM64 Mac OS X 14.6.1 (Build 23G93))",
            ClientInfo("Outlook", "desktop", "macOS"),
        ),
        (
            "Microsoft Office/16.0 (Microsoft Outlook 16.0.12329; Pro)",
            ClientInfo("Outlook", "desktop", "Windows"),
        ),
        (
            "Mail/3774.300.61.1.2 CFNetwork/1410.0.3 Darwin/22.6.0 (arm64)",
            ClientInfo("Apple Mail", "desktop", "macOS"),
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Thunderbird/128.0",
            ClientInfo("Thunderbird", "desktop", "Windows"),
        ),
        (
            "Mozilla/5.0 (iPad; CPU OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            "Mobile/15E148",
            ClientInfo("Apple Mail", "tablet", "iOS", guessed=True),
        ),
        (
            "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/130.0.0.0 Safari/537.36",
            ClientInfo("Webmail (Chrome)", "tablet", "Android"),
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
            ClientInfo("Webmail (Edge)", "desktop", "Windows"),
        ),
        # Outlook's real "Tablet PC 2.0" token is a Windows feature flag, not a tablet.
        (
            "Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 6.1; Trident/7.0; Tablet PC 2.0; "
            "Microsoft Outlook 14.0.7113; ms-office; MSOffice 14)",
            ClientInfo("Outlook", "desktop", "Windows"),
        ),
        # Proxies: the client is the provider, the proxy's claimed Windows XP is not the reader's.
        (
            "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
            ClientInfo("Gmail", "unknown", "unknown"),
        ),
    ],
)
def test_known_shapes(user_agent: str, expected: ClientInfo) -> None:
    assert parse_user_agent(user_agent) == expected


@pytest.mark.parametrize(
    ("user_agent", "client"),
    [
        # Clients in no list of ours, recognised by structure: a product token that says mail,
        # a native Apple app, the app token after a web view's engine tokens, an Electron app.
        ("Mozilla/5.0 (Linux; Android 12; SM-G998B Build/SP1A; wv) AppleWebKit/537.36 (KHTML, like Gecko) "
         "Version/4.0 Chrome/96.0.4664.104 Mobile Safari/537.36 SuperMail/1.2", "SuperMail"),
        ("Spark/3.12.1 CFNetwork/1494.0.7 Darwin/23.4.0", "Spark"),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
         "Newmail/2.1", "Newmail"),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
         "Mobile/15E148 Readerly/4.2", "Readerly"),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Inboxer/3.1.0 "
         "Chrome/120.0.6099.291 Electron/28.3.3 Safari/537.36", "Inboxer"),
        ("NaverMailApp/2.2.2 (Android 10; SM-G986N)", "Naver Mail"),
        ("Yahoo%20Mail/7.40.1 CFNetwork/1408.0.4 Darwin/22.5.0", "Yahoo Mail"),
        ("Mozilla/5.0 (X11; Linux x86_64; rv:24.0) Gecko/20100101 Icedove/24.4.0", "Thunderbird"),
        ("Mozilla/4.0 (compatible; Lotus-Notes/6.0; Windows-NT)", "Lotus Notes"),
        ("Microsoft Office/16.0 (Windows NT 10.0; Microsoft Word 16.0.10730; Pro)", "Microsoft Office"),
    ],
)  # fmt: skip
def test_structural_rules_name_unlisted_clients(user_agent: str, client: str) -> None:
    facts = analyse_user_agent(user_agent)
    assert facts.machine is None
    assert facts.info.client == client


def test_bare_web_views_are_marked_as_guesses() -> None:
    mac = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
    android = (
        "Mozilla/5.0 (Linux; Android 9; SM-G950F Build/PPR1.180610.011; wv) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Version/4.0 Chrome/86.0.4240.110 Mobile Safari/537.36"
    )
    assert parse_user_agent(mac).guessed and parse_user_agent(android).guessed
    assert not parse_user_agent("Outlook-iOS/709.2042344.prod.iphone (3.21.0)").guessed


def test_a_device_name_containing_bot_is_not_a_bot() -> None:
    ua = (
        "Mozilla/5.0 (Linux; Android 9; CUBOT P30) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/90.0.4430.210 Mobile Safari/537.36"
    )
    facts = analyse_user_agent(ua)
    assert facts.machine is None and facts.info == ClientInfo("Webmail (Chrome)", "mobile", "Android")


def test_parses_are_cached_and_input_is_bounded() -> None:
    ua = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Thunderbird/128.3.1"
    assert parse_user_agent(ua) is parse_user_agent(ua)
    huge = "Mozilla/5.0 (Windows NT 10.0) " + "A" * 1_000_000
    assert parse_user_agent(huge) is parse_user_agent(huge[:MAX_LENGTH])


def test_missing_user_agent() -> None:
    assert parse_user_agent(None) == ClientInfo("unknown", "unknown", "unknown")
    assert parse_user_agent("   ") == ClientInfo("unknown", "unknown", "unknown")
    assert analyse_user_agent(None).machine is not None


UA_PIECES = st.sampled_from(
    [
        "Mozilla/5.0 ", "(Windows NT 10.0; Win64; x64) ", "(Macintosh; Intel Mac OS X 10_15_7) ",
        "(iPhone; CPU ", "AppleWebKit/605.1.15 ", "(KHTML, like Gecko) ", "Chrome/", "Safari/537.36",
        "Mobile/15E148", "; wv)", "Outlook", "Mail/", "CFNetwork/1.0 Darwin/2", "(compatible; ", "MSIE 7.0;",
        "Trident/7.0", "bot", "http://", "GoogleImageProxy", "YahooMailProxy", "Edge/12.246", "%20", "/", "(",
        ")", ";", " ", "\x00", "é", "\u202e",
    ]
)  # fmt: skip
USER_AGENTS = st.one_of(
    st.none(),
    st.text(max_size=300),
    st.lists(UA_PIECES, max_size=25).map("".join),
    st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
    st.builds(lambda piece, n: piece * n, st.text(min_size=1, max_size=8), st.integers(0, 200_000)),
)


@settings(max_examples=300, deadline=1000)
@given(USER_AGENTS)
def test_parse_never_raises_and_returns_valid_values(user_agent: str | None) -> None:
    info = parse_user_agent(user_agent)
    assert info.device in DEVICES
    assert isinstance(info.client, str) and 0 < len(info.client) <= 60 and info.client.isprintable()
    assert isinstance(info.os, str) and info.os
    facts = analyse_user_agent(user_agent)
    assert facts.machine is None or facts.machine.kind in ("proxy", "prefetch", "scanner")
