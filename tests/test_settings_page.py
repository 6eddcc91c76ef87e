"""The dashboard's settings page: configuration shown with its settings, webhooks and API tokens managed with
CSRF-protected forms, secrets shown once."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from deadpixel.accounts.users import create_user
from deadpixel.config import Settings
from deadpixel.enrich.geo import builtin_data_source
from deadpixel.enrich.opens import OpenClassifier
from deadpixel.events import OpenEvent
from deadpixel.hooks import registry
from deadpixel.server.app import Deadpixel
from deadpixel.store.db import create_engine
from deadpixel.store.messages import create_message
from deadpixel.store.writes import write_opens

from .test_dashboard import sign_in


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    engine = create_engine(settings.database_url)
    with engine.begin() as conn:
        create_user(conn, "ann", "correct horse")
    engine.dispose()
    with TestClient(Deadpixel(settings), base_url="http://testserver") as test_client:
        yield test_client


def csrf(page: str) -> str:
    return page.split('name="csrf" value="', 1)[1].split('"', 1)[0]


def secret_on(page: str, prefix: str) -> str | None:
    found = re.search(rf'<code class="secret">({prefix}[A-Za-z0-9_-]+)</code>', page)
    return found.group(1) if found else None


def test_the_settings_page_needs_a_sign_in_and_shows_the_configuration(client: TestClient) -> None:
    for method, path in [
        ("GET", "/settings"),
        ("POST", "/settings/webhooks"),
        ("POST", "/settings/tokens/1/revoke"),
    ]:
        response = client.request(method, path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith("/login?next=")
    assert sign_in(client) == 303
    page = client.get("/settings")
    assert page.status_code == 200 and "content-security-policy" in page.headers
    expected = [
        "DEADPIXEL_BASE_URL", "DEADPIXEL_IP_MODE", "<code>truncate</code>", "DEADPIXEL_RETENTION_DAYS",
        "kept for ever", "DEADPIXEL_SELF_IPS", 'id="your-address"', "No webhooks yet", "No tokens yet",
    ]  # fmt: skip
    for shown in expected:
        assert shown in page.text, shown
    assert 'href="/settings"' in page.text


def test_the_settings_page_says_where_the_geo_data_comes_from_and_its_date(client: TestClient) -> None:
    assert sign_in(client) == 303
    page = client.get("/settings").text
    source = builtin_data_source()
    assert f'<time id="geo-date" datetime="{source["date"]}">' in page
    for part in source["parts"]:
        assert f"{part['package']} {part['version']}" in page and part["date"] in page
    assert '<a href="https://db-ip.com">IP Geolocation by DB-IP</a>' in page  # CC BY 4.0 attribution
    assert "DEADPIXEL_GEOIP_DATABASE" in page  # no database of one's own: how to add region and city


def test_webhooks_are_added_with_their_secret_shown_once_and_removed(
    client: TestClient, settings: Settings
) -> None:
    assert sign_in(client) == 303
    token = csrf(client.get("/settings").text)
    forged = client.post("/settings/webhooks", data={"url": "https://example.com/h", "events": "open"})
    assert forged.status_code == 403
    bad = client.post(
        "/settings/webhooks", data={"csrf": token, "url": "ftp://example.com/h", "events": "open"}
    )
    assert bad.status_code == 400 and "is not an http:// or https:// URL" in bad.text
    none = client.post("/settings/webhooks", data={"csrf": token, "url": "https://example.com/h"})
    assert none.status_code == 400 and "events must be among" in none.text
    added = client.post(
        "/settings/webhooks", data={"csrf": token, "url": "https://example.com/h", "events": ["open"]}
    )
    assert added.status_code == 200
    secret = secret_on(added.text, "whsec_")
    engine = create_engine(settings.database_url)
    with engine.begin() as conn:
        (hook,) = registry.list_webhooks(conn)
        assert registry.get_webhook(conn, hook.id)[1] == secret and hook.events == ("open",)
        mid = create_message(conn, recipient="ann@example.com", campaign="spring")
        write_opens(conn, [OpenEvent(mid, time.time(), "198.51.100.7", "Thunderbird/128.0", "GET")],
                    OpenClassifier(None))  # fmt: skip
    engine.dispose()
    again = client.get("/settings").text
    assert secret is not None and secret not in again and "https://example.com/h" in again
    assert 'class="delivery-pending"' in again  # the open waits in the outbox
    assert client.post(f"/settings/webhooks/{hook.id}/remove", data={}).status_code == 403
    assert client.post("/settings/webhooks/99/remove", data={"csrf": token}).status_code == 404
    assert client.post("/settings/webhooks/x/remove", data={"csrf": token}).status_code == 404
    removed = client.post(f"/settings/webhooks/{hook.id}/remove", data={"csrf": token})
    assert removed.status_code == 200 and "No webhooks yet" in removed.text


def test_api_tokens_are_created_once_and_revoked(client: TestClient) -> None:
    assert sign_in(client) == 303
    token = csrf(client.get("/settings").text)
    assert client.post("/settings/tokens", data={"name": "ci"}).status_code == 403
    bad = client.post("/settings/tokens", data={"csrf": token, "name": "two words"})
    assert bad.status_code == 400 and "not a usable name" in bad.text
    made = client.post("/settings/tokens", data={"csrf": token, "name": "ci"})
    secret = secret_on(made.text, "dp_")
    assert made.status_code == 200 and secret is not None
    assert client.post("/settings/tokens", data={"csrf": token, "name": "ci"}).status_code == 400
    bearer = {"authorization": f"Bearer {secret}"}
    assert client.get("/api/v1/campaigns", headers=bearer).status_code == 200
    listed = client.get("/settings").text
    assert secret not in listed and "ci" in listed and "active" in listed
    token_id = re.search(r'action="/settings/tokens/(\d+)/revoke"', listed).group(1)  # type: ignore[union-attr]
    revoked = client.post(f"/settings/tokens/{token_id}/revoke", data={"csrf": token})
    assert revoked.status_code == 200 and "Token ci revoked" in revoked.text
    assert client.get("/api/v1/campaigns", headers=bearer).status_code == 401
    assert client.post("/settings/tokens/77/revoke", data={"csrf": token}).status_code == 404
