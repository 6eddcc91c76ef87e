"""The hidden link in a real browser: a composed message shown in headless Chromium, as a webmail shows it.
No person can see it, reach it with the mouse or the keyboard, or hear it from a screen reader.

Needs Debian's ``chromium`` (/usr/bin/chromium) and the ``playwright`` Python package; never downloads a
browser. Skipped, saying why, when either is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deadpixel.mail.compose import track_html

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync",
]  # fmt: skip
HIDDEN = "https://t.example/c/hidden-link-token"

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")

# Messages as authors write them: the link first in the body, links everywhere, a table layout, a body
# without a tag, and one whose own CSS makes every link and div visible and large.
MESSAGES = {
    "plain": "<html><body><p>Hello</p><p><a href='https://shop.example/a'>Sale</a></p></body></html>",
    "link-first": "<body style='margin:0'><a href='https://shop.example/a'>Top</a><p>Text</p></body>",
    "table": (
        "<!doctype html><html><head><style>td{padding:20px}</style></head><body>"
        "<table width='100%'><tr><td><a href='https://shop.example/a'>One</a></td>"
        "<td><a href='https://shop.example/b'>Two</a></td></tr></table></body></html>"
    ),
    "no-body": "<p>Hi</p><a href='https://shop.example/a'>Sale</a><p>Bye</p>",
    "loud-css": (
        "<html><head><style>a{display:block!important;font-size:40px;padding:30px;color:red}"
        "div{display:block!important;min-height:50px}</style></head><body><a href='https://shop.example/a'>Sale</a></body></html>"
    ),
}


def _points(page: Any) -> list[tuple[int, int]]:
    size = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
    return [(x, y) for x in range(0, size[0], 7) for y in range(0, min(size[1], 800), 7)]


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_the_hidden_link_cannot_be_seen_clicked_reached_or_heard(name: str) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")
    html, links = track_html(MESSAGES[name], None, lambda url: url + "?tracked", HIDDEN)
    assert links and html.count(HIDDEN) == 1
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 640, "height": 480})
            page.set_content(html, wait_until="load")
            hidden = page.locator(f'a[href="{HIDDEN}"]')
            assert hidden.count() == 1  # it is in the document, for scanners that read the source
            # Not seen: nothing rendered, no box.
            assert not hidden.is_visible()
            assert hidden.bounding_box() is None
            assert page.evaluate(
                "(a) => a.getClientRects().length === 0 && a.parentElement.getClientRects().length === 0",
                hidden.element_handle(),
            )
            # Not clickable: no point of the page hits it, and a click on it cannot happen.
            hits = page.evaluate(
                """([points, href]) => points.filter(([x, y]) => document.elementsFromPoint(x, y)
                    .some(e => e.closest && e.closest(`a[href="${href}"]`)))""",
                [_points(page), HIDDEN],
            )
            assert hits == []
            with pytest.raises(sync_api.TimeoutError):
                hidden.click(timeout=500)
            # Not reachable from the keyboard: tabbing through the page never lands on it.
            visited = []
            for _ in range(len(links) + 3):
                page.keyboard.press("Tab")
                visited.append(page.evaluate("document.activeElement && document.activeElement.href"))
            assert HIDDEN not in visited
            assert any(v and v.endswith("?tracked") for v in visited)  # the real links are reachable
            assert hidden.get_attribute("tabindex") == "-1"
            # Not heard: out of the accessibility tree, which still has the real links.
            tree = page.locator("body").aria_snapshot()
            assert "link" in tree and HIDDEN not in tree
            assert tree.count("- link") == len(links)
            assert hidden.get_attribute("aria-hidden") == "true"
            cdp = page.context.new_cdp_session(page)
            nodes = cdp.send("Accessibility.getFullAXTree")["nodes"]
            exposed = [n for n in nodes if not n.get("ignored") and n.get("role", {}).get("value") == "link"]
            assert len(exposed) == len(links)
        finally:
            browser.close()
