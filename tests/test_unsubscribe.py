"""Unsubscribing from campaigns: RFC 2369/8058 headers, the /u/ page on a real server, one-click POSTs, and
the suppression list that later sends respect (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from deadpixel.config import Settings
from deadpixel.security.keys import load_or_create_keys
from deadpixel.security.tokens import TokenSigner

from .conftest import Server
from .helpers import deadpixel
from .smtp_sink import SMTPServerHandle, smtp_fixture  # noqa: F401  (the fixture)

HTML = (
    '<html><body><p>Hi {{ first_name }}</p><a href="https://shop.example/">Shop</a>'
    '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p></body></html>'
)


def run_campaign(tmp_path: Path, name: str, rows: str, *extra: str, env: dict[str, str] | None = None) -> Any:
    recipients = tmp_path / f"{name}.csv"
    recipients.write_text("email,first_name,track\n" + rows, encoding="utf-8")
    template = tmp_path / "t.html"
    template.write_text(HTML, encoding="utf-8")
    return deadpixel(
        "campaign", "send", name, "--recipients", str(recipients), "--subject", "Hi {{ first_name }}",
        "--html", str(template), "--text", str(template), *extra, env=env,
    )  # fmt: skip


@pytest.fixture
def https_base(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> str:
    monkeypatch.setenv("DEADPIXEL_BASE_URL", "https://t.example")
    return "https://t.example"


def test_campaign_mail_carries_one_click_unsubscribe(
    smtp: SMTPServerHandle, settings: Settings, https_base: str, server_factory: type[Server], tmp_path: Path
) -> None:
    result = run_campaign(tmp_path, "news", "ann@example.org,Ann,\nbob@example.org,Bob,no\n")
    assert result.returncode == 0, result.stderr
    assert "not https" not in result.stderr  # no warning with an https:// base URL
    got = smtp.sink.by_recipient()
    signer = TokenSigner(load_or_create_keys(settings.keys_file))
    tokens = {}
    for address, (received,) in got.items():
        message = received.message
        header = message["List-Unsubscribe"]
        assert header.startswith(f"<{https_base}/u/") and header.endswith(">")
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        url = header[1:-1]
        assert f'href="{url}"' in received.html()  # the footer link goes straight to the page, untracked
        assert signer.unsubscribe_id(url.rsplit("/", 1)[1]) is not None
        tokens[address] = url.rsplit("/", 1)[1]
    assert "/c/" in got["ann@example.org"][0].html() and "/c/" not in got["bob@example.org"][0].html()
    assert tokens["ann@example.org"] != tokens["bob@example.org"]

    server = server_factory(env={**settings_env(settings)}).start()
    page = httpx.get(f"{server.url}/u/{tokens['ann@example.org']}")
    assert page.status_code == 200 and '<form method="post">' in page.text
    assert "a******@example.org" not in page.text and "a**@example.org" in page.text
    assert "&ldquo;news&rdquo;" in page.text
    assert httpx.head(f"{server.url}/u/{tokens['ann@example.org']}").status_code == 200
    assert suppression_list() == []  # looking, or a scanner following the link, unsubscribes nobody

    one_click = httpx.post(
        f"{server.url}/u/{tokens['ann@example.org']}",
        content=b"List-Unsubscribe=One-Click",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert one_click.status_code == 200 and "unsubscribed" in one_click.text
    again = httpx.post(f"{server.url}/u/{tokens['ann@example.org']}", data={})  # twice is fine
    assert again.status_code == 200
    assert "Already unsubscribed" in httpx.get(f"{server.url}/u/{tokens['ann@example.org']}").text
    [entry] = suppression_list()
    assert (entry["address"], entry["source"], entry["campaign"]) == ("ann@example.org", "one-click", "news")

    pixel = signer.pixel_token("0" * 16)
    bob = tokens["bob@example.org"]
    altered = bob[:-1] + ("1" if bob.endswith("0") else "0")  # one character off (never the token itself)
    for bad in ["garbage", "0" * 32, pixel, altered]:
        response = httpx.post(f"{server.url}/u/{bad}")
        assert response.status_code == 404 and "not valid" in response.text
    assert len(suppression_list()) == 1

    # Later campaigns skip the address, and say so per row.
    later = run_campaign(tmp_path, "later", "ANN@example.org,Ann,\ncarl@example.org,Carl,\n", "--json")
    summary = json.loads(later.stdout)
    assert (summary["sent"], summary["suppressed"]) == (1, 1)
    assert summary["problems"][0]["line"] == 2 and "unsubscribed" in summary["problems"][0]["reason"]
    assert later.returncode == 0  # skipping someone who left is not a failure
    assert len(smtp.sink.by_recipient()["ann@example.org"]) == 1

    # Forgetting a person keeps their wish to get nothing.
    deadpixel("forget", "ann@example.org", "--yes")
    assert [e["address"] for e in suppression_list()] == ["ann@example.org"]


def settings_env(settings: Settings) -> dict[str, str]:
    return {"DEADPIXEL_DATA_DIR": str(settings.data_dir), "DEADPIXEL_DATABASE_URL": settings.database_url}


def suppression_list() -> list[dict[str, Any]]:
    return list(json.loads(deadpixel("suppression", "list", "--json").stdout))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_http_base_url_warns_but_sends_both_headers(
    smtp: SMTPServerHandle, settings: Settings, tmp_path: Path
) -> None:
    result = run_campaign(tmp_path, "plain", "ann@example.org,Ann,\n")
    assert result.returncode == 0
    assert "Warning: DEADPIXEL_BASE_URL is http://127.0.0.1:8000, not https://" in result.stderr
    message = smtp.sink.messages[0].message
    assert message["List-Unsubscribe"].startswith("<http://127.0.0.1:8000/u/")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_suppression_list_by_hand(
    smtp: SMTPServerHandle, settings: Settings, tmp_path: Path, https_base: str
) -> None:
    assert "added to" in deadpixel("suppression", "add", "Ann@Example.org").stdout
    assert "already on" in deadpixel("suppression", "add", "ann@example.org").stdout
    assert deadpixel("suppression", "add", "nope").returncode == 2
    summary = json.loads(run_campaign(tmp_path, "c", "ann@example.org,Ann,\n", "--json").stdout)
    assert (summary["sent"], summary["suppressed"]) == (0, 1) and smtp.sink.messages == []
    assert "removed from" in deadpixel("suppression", "remove", "ann@example.org").stdout
    assert "is not on" in deadpixel("suppression", "remove", "ann@example.org").stdout
    summary = json.loads(run_campaign(tmp_path, "c", "ann@example.org,Ann,\n", "--json").stdout)
    assert summary["sent"] == 1
