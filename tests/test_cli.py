"""The command line as a user runs it, in process (CliRunner), on a real store and a real server."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from deadpixel.config import Settings

from .conftest import Server
from .helpers import deadpixel


def as_json(*args: str) -> Any:
    return json.loads(deadpixel(*args, "--json", check=True).stdout)


def test_pixel_new_prints_a_pasteable_pixel(settings: Settings) -> None:
    made = as_json(
        "pixel", "new", "--to", "bob@example.com", "--subject", "Proposal", "--campaign", "Q3 outreach"
    )
    assert set(made) >= {"message_id", "url", "html"}
    assert made["url"].startswith(settings.base_url + "/o/") and made["url"].endswith(".gif")
    assert "bob" not in made["url"] and "example" not in made["url"]
    html = made["html"]
    assert html.startswith("<img ") and f'src="{made["url"]}"' in html
    assert 'width="1"' in html and 'height="1"' in html and 'alt=""' in html and "border:0" in html


def test_pixel_new_for_a_person(settings: Settings) -> None:
    out = deadpixel("pixel", "new", "--to", "bob@example.com", check=True).stdout
    assert "Pixel URL: http" in out and "<img " in out


def test_pixel_new_refuses_a_bad_address(settings: Settings) -> None:
    result = deadpixel("pixel", "new", "--to", "not an address", check=False)
    assert result.returncode == 2
    assert "'not an address': not an email address" in result.stderr
    forged = deadpixel("pixel", "new", "--to", '"victim@evil.example>"@example.com', check=False)
    assert forged.returncode == 2 and "needs quoting" in forged.stderr and "Traceback" not in forged.stderr
    bare = deadpixel("pixel", "new", "--to", "Bob <bob@example.com>", "--json", check=True).stdout
    assert json.loads(bare)["to"] == "bob@example.com"  # stored bare, as every other way in stores it


@pytest.mark.slow
def test_opens_and_report_follow_real_fetches(server: Server, settings: Settings) -> None:
    q3 = [as_json("pixel", "new", "--to", f"p{i}@example.com", "--campaign", "Q3") for i in range(4)]
    other = as_json("pixel", "new", "--to", "x@example.com", "--campaign", "Other")
    as_json("pixel", "new", "--to", "y@example.com")
    path = lambda made: made["url"].split(str(settings.port), 1)[1]  # noqa: E731
    for made, times in [(q3[0], 3), (q3[1], 1), (other, 2)]:
        for _ in range(times):
            httpx.get(server.url + path(made), headers={"user-agent": "Thunderbird"})
    httpx.head(server.url + path(q3[2]))

    report = as_json("report", "Q3")
    assert report["sent"] == 4
    assert report["unique_opens"] == 3
    assert report["total_opens"] == 5
    assert report["open_rate"] == 0.75
    everything = as_json("report")
    assert (everything["sent"], everything["unique_opens"], everything["total_opens"]) == (6, 4, 7)
    assert 0 <= everything["open_rate"] <= 1

    opens = as_json("opens", "--campaign", "Q3")
    assert len(opens) == 5
    assert [o["at"] for o in opens] == sorted((o["at"] for o in opens), reverse=True)
    assert opens[0]["method"] == "HEAD"
    for o in opens:
        assert set(o) >= {"message_id", "at", "ip", "user_agent", "method"}
    assert len(as_json("opens", "--limit", "2")) == 2
    just_one = as_json("opens", "--message", q3[0]["message_id"])
    assert [o["message_id"] for o in just_one] == [q3[0]["message_id"]] * 3
    assert "Q3" in deadpixel("report", "Q3", check=True).stdout


def test_unknown_campaign_is_one_clear_line(settings: Settings) -> None:
    result = deadpixel("report", "Nope", check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == "Error: no campaign named 'Nope'"


def test_commands_create_and_migrate_a_fresh_store_on_first_use(env: dict[str, str]) -> None:
    assert as_json("report")["sent"] == 0
    assert "already current" in deadpixel("db", "upgrade", check=True).stdout


def test_db_upgrade_on_an_empty_store(env: dict[str, str]) -> None:
    assert "migrated from empty" in deadpixel("db", "upgrade", check=True).stdout


def test_secret_rotate_reports_the_new_key(settings: Settings) -> None:
    assert "Signing key 2 is now current" in deadpixel("secret", "rotate", check=True).stdout
    assert "Signing key 3 is now current" in deadpixel("secret", "rotate", check=True).stdout
