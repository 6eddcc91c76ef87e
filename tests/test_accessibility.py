"""Every dashboard page, signed in, at desktop and at phone width, checked by axe-core in real Chromium.

A "serious" or "critical" violation fails the test; so does a page wider than a phone's screen. axe-core
comes from npm (``tests/axe/package.json``, installed outside version control by ``.ci/run`` with
``npm ci --prefix tests/axe``); without it, or without Debian's Chromium, the test is skipped saying why.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from deadpixel.config import Settings

from .conftest import Server
from .helpers import deadpixel, make_pixels
from .test_browser_e2e import CHROMIUM, CHROMIUM_ARGS
from .test_setup_link import console_link

AXE = Path(__file__).parent / "axe" / "node_modules" / "axe-core" / "axe.min.js"
BAD_IMPACTS = ("serious", "critical")
WIDTHS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 375, "height": 740}}
AGENTS = (
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Thunderbird/128.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile",
    "curl/8.5.0",
)

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
    pytest.mark.skipif(not AXE.exists(), reason="needs axe-core: npm ci --prefix tests/axe (.ci/run does)"),
]


@pytest.fixture
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def new_page(browser: Any) -> Any:
    """A page that has axe-core in every document it loads (an init script: the pages' CSP allows no
    inline script, and the check must not weaken it)."""
    context = browser.new_context(viewport=WIDTHS["desktop"])
    context.add_init_script(path=str(AXE))
    return context.new_page()


def serious_violations(page: Any) -> list[str]:
    """axe-core's serious and critical findings on the page as it stands, one line each."""
    found = page.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']})).violations")
    return [
        f"{v['impact']} {v['id']}: {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in found
        if v["impact"] in BAD_IMPACTS
    ]


def check(page: Any, where: str) -> None:
    """No serious or critical violation, and (at phone width) nothing wider than the screen."""
    problems = serious_violations(page)
    assert not problems, f"{where}:\n" + "\n".join(problems)
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"{where}: the page is {width[0]} px wide in a {width[1]} px window"


def test_the_check_fails_on_a_page_with_a_serious_violation(browser: Any) -> None:
    page = new_page(browser)
    page.set_content('<!doctype html><html lang="en"><title>t</title><main><input name="q"></main></html>')
    with pytest.raises(AssertionError, match="critical label"):
        check(page, "a form field without a label")
    page.set_content('<!doctype html><html lang="en"><title>t</title><main><label>Search <input name="q">'
                     "</label></main></html>")  # fmt: skip
    check(page, "the same field, labelled")


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_every_page_passes_axe_at_desktop_and_phone_width(
    browser: Any, server: Server, settings: Settings
) -> None:
    page = new_page(browser)
    link = console_link(server)
    assert link is not None, "no setup link printed"
    for name, size in WIDTHS.items():
        page.set_viewport_size(size)
        page.goto(server.url + link[link.index("/setup/") :])
        check(page, f"setup, {name}")

    made = deadpixel("user", "create", "ann", "--password-stdin", input="correct horse\n")
    assert made.returncode == 0, made.stderr
    pixels = make_pixels(settings, 6, campaign="spring & summer", sent_at=time.time() - 7200)
    for i, (_, path) in enumerate(pixels[:5]):
        httpx.get(server.url + path, headers={"user-agent": AGENTS[i % len(AGENTS)]})
    message_id = pixels[0][0]

    page.set_viewport_size(WIDTHS["desktop"])
    page.goto(server.url + "/login")
    page.fill("input[name=name]", "ann")
    page.fill("input[name=password]", "correct horse")
    page.click("button[type=submit]")
    page.wait_for_url("**/campaigns")

    campaign = "/campaigns/" + quote("spring & summer")
    paths = {
        "overview": "/campaigns",
        "campaign": campaign,
        "campaign, last 24 hours": campaign + "?range=24h",
        "message": f"/messages/{message_id}",
        "new pixel": "/pixels/new",
        "new campaign": "/compose",
        "contacts": "/contacts",
        "settings": "/settings",
        "users": "/users",
    }
    for name, size in WIDTHS.items():
        page.set_viewport_size(size)
        for what, path in paths.items():
            page.goto(server.url + path)
            check(page, f"{what}, {name}")
        page.goto(server.url + campaign)
        chart = page.locator(f"#opens-by-hour svg.{'narrow' if name == 'phone' else 'wide'}")
        box = chart.bounding_box()
        assert box is not None and box["width"] <= size["width"] and box["height"] > 100
    signed_out = new_page(browser)
    for name, size in WIDTHS.items():
        signed_out.set_viewport_size(size)
        signed_out.goto(server.url + "/login")
        check(signed_out, f"sign-in, {name}")
