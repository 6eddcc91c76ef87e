"""End to end as a reader sees it: a campaign goes through a real SMTP server, each received message's
HTML is shown in headless Chromium (as a webmail would), and the open and a click come back to a real
``deadpixel serve`` for exactly that recipient.

Needs Debian's ``chromium`` (/usr/bin/chromium) and the ``playwright`` Python package; never downloads a
browser. Skipped, saying why, when either is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from deadpixel.config import Settings
from deadpixel.store.db import create_engine
from deadpixel.store.schema import clicks, messages, opens

from .conftest import Server
from .smtp_sink import SMTPServerHandle, smtp_fixture  # noqa: F401  (the fixture)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync",
]  # fmt: skip

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]


class _Landing(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"<!doctype html><title>Landed</title><p id=where>{self.path}</p>".encode()
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def landing() -> Iterator[str]:
    """The shop the newsletter links to: a real web server on loopback."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Landing)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.slow
def test_a_reader_opens_and_clicks_in_chromium(
    smtp: SMTPServerHandle,
    settings: Settings,
    server_factory: type[Server],
    env: dict[str, str],
    landing: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")
    server = server_factory(env=dict(env))
    base_url = f"http://127.0.0.1:{server.port}"
    monkeypatch.setenv("DEADPIXEL_BASE_URL", base_url)
    server.env["DEADPIXEL_BASE_URL"] = base_url
    server.start()

    (tmp_path / "list.csv").write_text(
        "email,first_name\nann@example.org,Ann\nbob@example.org,Bob\ncarol@example.org,Carol\n",
        encoding="utf-8",
    )
    (tmp_path / "news.html").write_text(
        "<!doctype html><html><head><style>body{font-family:sans-serif}</style></head><body>"
        "<h1>Hello {{ first_name }}</h1>"
        f'<p><a id="shop" href="{landing}/sale?who={{{{ first_name }}}}">See the sale</a></p>'
        '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p></body></html>',
        encoding="utf-8",
    )
    recipients, template = str(tmp_path / "list.csv"), str(tmp_path / "news.html")
    sent = subprocess.run(
        [sys.executable, "-m", "deadpixel", "campaign", "send", "e2e", "--recipients", recipients,
         "--subject", "Hi {{ first_name }}", "--html", template, "--json"],
        capture_output=True, text=True, timeout=60, env=os.environ.copy(),
    )  # fmt: skip
    assert json.loads(sent.stdout)["sent"] == 3, sent.stderr
    received = {rcpt: copies[0] for rcpt, copies in smtp.sink.by_recipient().items()}
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        ids = {r.recipient: r.id for r in conn.execute(select(messages.c.recipient, messages.c.id))}
    time.sleep(2.1)  # no reader opens mail within 2 s of sending; the verdict rules know that

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            for reader in ("ann@example.org", "bob@example.org"):  # Carol never opens hers
                page.set_content(received[reader].html(), wait_until="load")  # images loaded, pixel included
                assert page.locator("h1").inner_text() == f"Hello {reader.split('@')[0].title()}"
            page.set_content(received["ann@example.org"].html(), wait_until="load")
            with page.expect_navigation():
                page.click("#shop")
            assert page.url == f"{landing}/sale?who=Ann"
            assert page.locator("#where").inner_text() == "/sale?who=Ann"
        finally:
            browser.close()

    with engine.connect() as conn:
        opened = [r.message_id for r in conn.execute(select(opens.c.message_id, opens.c.user_agent))]
        agents = set(conn.execute(select(opens.c.user_agent)).scalars())
        clicked = conn.execute(select(clicks.c.message_id, clicks.c.link, clicks.c.method)).all()
    engine.dispose()
    # Exactly the two readers; showing Ann's message again may reuse the image Chromium has in memory.
    assert set(opened) == {ids["ann@example.org"], ids["bob@example.org"]}
    assert all("Chrome" in (agent or "") for agent in agents)
    assert [tuple(row) for row in clicked] == [(ids["ann@example.org"], 0, "GET")]
    report = json.loads(
        subprocess.run([sys.executable, "-m", "deadpixel", "report", "e2e", "--json"], capture_output=True,
                       text=True, check=True).stdout
    )  # fmt: skip
    assert (report["sent"], report["unique_opens"], report["total_clicks"]) == (3, 2, 1)
