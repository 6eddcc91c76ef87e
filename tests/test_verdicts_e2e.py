"""Verdicts end to end: a real server, a mix of clients, proxies, prefetches and scanners, exact counts."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from deadpixel.config import Settings
from deadpixel.security.keys import load_or_create_keys
from deadpixel.security.tokens import TokenSigner
from deadpixel.store.db import create_engine
from deadpixel.store.messages import create_message

from .conftest import Server
from .helpers import deadpixel

THUNDERBIRD = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Thunderbird/128.3.1"
IPHONE_MAIL = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Mobile/15E148"
)
APPLE_MPP = "Mozilla/5.0"
GMAIL_PROXY = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
HOME = "81.2.69.142"  # a residential address in GB
SELF = "203.0.113.7"


def as_json(*args: str) -> Any:
    return json.loads(deadpixel(*args, "--json", check=True).stdout)


@pytest.fixture
def mix_server(server_factory: type[Server], env: dict[str, str]) -> Server:
    return server_factory(
        env={
            **env,
            "DEADPIXEL_TRUSTED_PROXIES": "127.0.0.1",
            "DEADPIXEL_SELF_IPS": SELF,
            "DEADPIXEL_IP_MODE": "full",
        }
    ).start()


def test_a_realistic_mix_is_counted_exactly(mix_server: Server, settings: Settings) -> None:
    engine = create_engine(settings.database_url)
    sent_at = time.time() - 3600  # sent an hour ago: no timing rule fires for later opens
    with engine.begin() as conn:
        ids = {
            name: create_message(conn, recipient=f"{name}@example.com", campaign="mix", sent_at=sent_at)
            for name in "ABCDEFGH"
        }
    engine.dispose()
    signer = TokenSigner(load_or_create_keys(settings.keys_file))

    def fetch(name: str, agent: str, ip: str, method: str = "GET") -> None:
        url = f"{mix_server.url}/o/{signer.pixel_token(ids[name])}.gif"
        response = httpx.request(method, url, headers={"user-agent": agent, "x-forwarded-for": ip})
        assert response.status_code == 200

    fetch("A", THUNDERBIRD, HOME)  # a person on Thunderbird
    fetch("B", APPLE_MPP, "17.58.0.1")  # Apple Mail Privacy Protection, nobody reading
    fetch("C", GMAIL_PROXY, "66.249.84.10")  # Gmail's proxy, fetching for a person
    fetch("D", CHROME, HOME, method="HEAD")  # a link checker
    fetch("E", APPLE_MPP, "17.58.0.2")  # prefetched, then really read on an iPhone
    fetch("E", IPHONE_MAIL, HOME)
    fetch("F", THUNDERBIRD, SELF)  # the sender looking at their own sent mail
    fetch("H", CHROME, "40.107.3.9")  # Microsoft EOP scanning on delivery, dressed as Chrome
    # G is never opened.

    report = as_json("report", "mix")
    assert report["sent"] == 8
    assert report["unique_opens"] == 6  # F's only open was the sender's own
    assert report["human_opens"] == 3  # A, C, E
    assert report["machine_opens"] == 3  # B, D, H
    assert report["unique_opens"] == report["human_opens"] + report["machine_opens"]
    assert report["total_opens"] == 8
    assert report["open_rate"] == 6 / 8
    assert report["human_open_rate"] == 3 / 8

    opens = {(o["message_id"], o["user_agent"]): o for o in as_json("opens", "--campaign", "mix")}
    a = opens[(ids["A"], THUNDERBIRD)]
    assert (a["kind"], a["client"], a["device"], a["country"]) == ("human", "Thunderbird", "desktop", "GB")
    assert opens[(ids["B"], APPLE_MPP)]["kind"] == "prefetch"
    assert "Apple Mail Privacy Protection" in opens[(ids["B"], APPLE_MPP)]["reason"]
    c = opens[(ids["C"], GMAIL_PROXY)]
    assert (c["kind"], c["client"], c["country"], c["city"]) == ("proxy", "Gmail", None, None)
    assert opens[(ids["D"], CHROME)]["reason"] == "HEAD request"
    assert opens[(ids["F"], THUNDERBIRD)]["kind"] == "self"
    h = opens[(ids["H"], CHROME)]
    assert h["kind"] == "scanner" and "40.107.0.0/16" in h["reason"]


def test_timing_rules_apply_only_with_a_known_send_time(mix_server: Server, settings: Settings) -> None:
    engine = create_engine(settings.database_url)
    with engine.begin() as conn:
        sent_now = create_message(conn, recipient="s@example.com", sent_at=time.time())
        hand_made = create_message(conn, recipient="h@example.com")
    engine.dispose()
    signer = TokenSigner(load_or_create_keys(settings.keys_file))
    for mid in (sent_now, hand_made):
        httpx.get(
            f"{mix_server.url}/o/{signer.pixel_token(mid)}.gif",
            headers={"user-agent": CHROME, "x-forwarded-for": HOME},
        )
    kinds = {o["message_id"]: o for o in as_json("opens")}
    assert kinds[sent_now]["kind"] == "scanner" and "after send" in kinds[sent_now]["reason"]
    assert kinds[hand_made]["kind"] == "human"


def test_classify_explains_one_request(settings: Settings) -> None:
    verdict = as_json("classify", "--user-agent", APPLE_MPP, "--ip", "17.58.0.1")
    assert set(verdict) >= {"client", "device", "os", "kind", "reason"}
    assert (verdict["client"], verdict["kind"]) == ("Apple Mail", "prefetch")
    head = as_json("classify", "--user-agent", THUNDERBIRD, "--method", "HEAD")
    assert (head["kind"], head["reason"]) == ("scanner", "HEAD request")
    fast = as_json("classify", "--user-agent", CHROME, "--ip", HOME, "--seconds-after-send", "1")
    assert fast["kind"] == "scanner"
