"""The open pixel adds nothing visible: each template in tests/data/templates renders in headless Chromium to
the same screenshot and the same document height with and without the pixel, and the pixel still loads.

Needs Debian's ``chromium`` (/usr/bin/chromium) and the ``playwright`` Python package; never downloads a
browser. The templates are ordinary mail shapes: centred 600 px tables, coloured footers set with
``bgcolor``, body backgrounds, a full-height layout, Outlook ghost tables, a plain letter, a fragment with
no ``<body>``, and a document with comments and whitespace after ``</html>``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from deadpixel.mail.compose import compose
from deadpixel.track.pixel import GIF

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TEMPLATES = sorted((Path(__file__).parent / "data" / "templates").glob("*.html"))
WIDTHS = (800, 375)  # a desktop reading pane and a phone

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")


@dataclass
class Site:
    """A real HTTP server on loopback: serves the pages under test and the pixel, and counts pixel loads."""

    url: str = ""
    pages: dict[str, bytes] = field(default_factory=dict)
    pixel_hits: list[str] = field(default_factory=list)


def _handler(site: Site) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/o/"):
                site.pixel_hits.append(self.path)
                body, kind = GIF, "image/gif"
            elif self.path in site.pages:
                body, kind = site.pages[self.path], "text/html; charset=utf-8"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(body)))
            self.send_header("cache-control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    site = Site()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(site))
    site.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield site
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[dict[int, Any]]:
    """One page per viewport width, reused: opening a page costs more than rendering a mail."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield {width: browser.new_page(viewport={"width": width, "height": 40}) for width in WIDTHS}
        browser.close()


def _sent_html(html: str, pixel_url: str) -> str:
    """The HTML part exactly as compose() sends it with a pixel."""
    composed = compose(
        sender="news@example.com", to=["reader@example.org"], subject="s", html=html,
        pixel_url=pixel_url, rewrite=None,
    )  # fmt: skip
    part = composed.message.get_body(("html",))
    assert part is not None
    content: str = part.get_content()
    return content


def _render(browser: dict[int, Any], site: Site, name: str, html: str, width: int) -> tuple[int, bytes]:
    """Document height and a full-page screenshot; the viewport is short so the height is the content's."""
    site.pages[name] = html.encode()
    page = browser[width]
    page.goto(site.url + name, wait_until="load")
    height: int = page.evaluate("document.documentElement.scrollHeight")
    return height, page.screenshot(full_page=True)


def test_there_are_enough_template_shapes() -> None:
    assert len(TEMPLATES) >= 8


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("template", TEMPLATES, ids=[t.stem for t in TEMPLATES])
def test_the_pixel_changes_no_pixel_of_the_rendered_mail(
    browser: dict[int, Any], site: Site, template: Path, width: int
) -> None:
    html = template.read_text()
    before = _render(browser, site, f"/{template.stem}-{width}.html", html, width)
    token = f"{template.stem}-{width}"
    hits = len(site.pixel_hits)
    tracked = _sent_html(html, f"{site.url}/o/{token}.gif")
    after = _render(browser, site, f"/{template.stem}-{width}-tracked.html", tracked, width)
    assert after[0] == before[0], "the pixel changed the document height"
    assert after[1] == before[1], "the pixel changed the rendered page"
    assert site.pixel_hits[hits:] == [f"/o/{token}.gif"], "the pixel did not load"


def test_the_comparison_sees_a_one_pixel_line(browser: dict[int, Any], site: Site) -> None:
    """The check above can fail: a plain 1 px block image at the end, as mail trackers often add, is seen."""
    template = next(t for t in TEMPLATES if t.stem == "centred-table-dark-footer")
    html = template.read_text()
    before = _render(browser, site, "/line.html", html, 800)
    img = f'<img src="{site.url}/o/line.gif" width="1" height="1" alt="" style="display:block;border:0">'
    after = _render(browser, site, "/line-tracked.html", html.replace("</body>", img + "</body>"), 800)
    assert after[0] == before[0] + 1
    assert after[1] != before[1]
