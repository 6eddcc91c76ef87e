"""The New campaign page in headless Chromium against a real ``deadpixel serve``: sign in, upload a CSV, paste
HTML, preview (a merge field filled in the sandboxed frame, its script not run, a warning listed), the page
at a phone's 375 px, and a test copy that reaches a real SMTP server (aiosmtpd) exactly once, marked.

Needs Debian's ``chromium`` and the ``playwright`` package; never downloads a browser.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from deadpixel.accounts.users import create_user
from deadpixel.config import Settings
from deadpixel.store.db import create_engine
from deadpixel.store.roles import Role
from deadpixel.store.schema import messages

from .conftest import Server
from .smtp_sink import SMTPServerHandle, smtp_fixture  # noqa: F401  (the fixture)
from .test_browser_e2e import CHROMIUM, CHROMIUM_ARGS

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]

HTML = (
    "<!doctype html><html><body><h1>Hello {{ first_name }}</h1>"
    '<p id="js">not run</p><script>document.getElementById("js").textContent = "ran"</script>'
    '<p><a href="https://shop.example/sale">Sale</a> <a href="tel:+3312345">Call us</a></p></body></html>'
)


@pytest.mark.slow
def test_new_campaign_preview_and_test_send_in_chromium(
    smtp: SMTPServerHandle,
    settings: Settings,
    server_factory: type[Server],
    env: dict[str, str],
    tmp_path: Path,
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")
    server = server_factory(env=dict(env)).start()
    engine = create_engine(settings.database_url)
    with engine.begin() as conn:
        create_user(conn, "sam", "correct horse", Role.SENDER)
    csv = tmp_path / "list.csv"
    csv.write_text("email,first_name\nann@example.org,Ann\nbob@example.org,Bob,oops\n", encoding="utf-8")

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 375, "height": 800})
            page.goto(server.url + "/login")
            page.get_by_label("Name").fill("sam")
            page.get_by_label("Password").fill("correct horse")
            page.get_by_role("button", name="Sign in").click()
            page.get_by_role("link", name="New campaign").click()
            page.get_by_label("Name").fill("Spring sale")
            page.get_by_label("Subject", exact=True).fill("Hi {{ first_name }}")
            page.get_by_label("Recipients").set_input_files(str(csv))
            page.get_by_label("HTML (Jinja2").fill(HTML)
            page.get_by_role("button", name="Preview").click()

            assert page.locator("#preview-subject").inner_text() == "Hi Ann"
            frame = page.frame_locator("iframe.phone")
            assert frame.locator("h1").inner_text() == "Hello Ann"
            assert frame.locator("#js").inner_text() == "not run"  # the sandbox runs no script
            warnings = page.locator("#warnings li")
            assert "tel:+3312345: a phone link" in warnings.first.inner_text()
            assert "line 3: has 3 fields" in page.locator("#list-problems").inner_text()
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 375, f"the page scrolls sideways at 375 px ({width} px wide)"

            page.get_by_label("Send a test to").fill("me@example.net")
            page.get_by_role("button", name="Send test").click()
            assert "Test sent to me@example.net" in page.locator("#notice").inner_text()
            page.get_by_role("button", name="Send", exact=True).click()
            page.get_by_role("button", name="Send to 1 recipient", exact=True).wait_for()  # asks first
        finally:
            browser.close()
    server.stop()

    assert len(smtp.sink.messages) == 1
    (received,) = smtp.sink.messages
    assert received.rcpt_tos == ["me@example.net"]
    assert received.message["Subject"] == "[Test] Hi Ann" and received.message["X-Deadpixel-Test"] == "yes"
    assert "Hello Ann" in received.html()
    with engine.connect() as conn:
        assert conn.execute(select(messages.c.id)).all() == []  # nothing any report could count
    engine.dispose()
