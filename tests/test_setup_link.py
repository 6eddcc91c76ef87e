"""The first account, created in the browser with the one-time link ``deadpixel serve`` prints."""

from __future__ import annotations

import os
import re
import select
import stat
import threading
import time

import httpx
import pytest

from deadpixel.accounts import setup_link
from deadpixel.accounts.users import list_users
from deadpixel.config import Settings
from deadpixel.server.start import offer_setup_link
from deadpixel.store.db import create_engine
from tests.conftest import Server
from tests.test_browser_e2e import CHROMIUM, CHROMIUM_ARGS

from .helpers import deadpixel

LINK = re.compile(r"(https?://\S+/setup/(\S+))")


def console_link(server: Server, timeout: float = 10.0) -> str | None:
    """The setup link from the server's stderr, or None once its start-up lines show none."""
    assert server.process is not None and server.process.stderr is not None
    fd = server.process.stderr.fileno()
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            if seen:  # printed before the server answered /healthz: nothing more is coming
                break
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        seen += chunk
        found = LINK.search(seen.decode(errors="replace"))
        if found:
            return found.group(1)
    return None


def form_csrf(page: httpx.Response) -> str:
    return page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]


def local(server: Server, link: str) -> str:
    return server.url + link[link.index("/setup/") :]


def accounts(settings: Settings) -> list[str]:
    engine = create_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            return [user.name for user in list_users(conn)]
    finally:
        engine.dispose()


def browser(server: Server) -> httpx.Client:
    """A client that keeps cookies but opens a connection per request: on a loaded machine a kept-alive
    connection may meet the server's idle timeout between two steps."""
    return httpx.Client(base_url=server.url, limits=httpx.Limits(max_keepalive_connections=0))


def test_the_first_account_is_made_in_the_browser_once_whichever_worker_answers(
    server_factory: type[Server], env: dict[str, str], settings: Settings
) -> None:
    server = server_factory(env=dict(env), workers=2).start()
    link = console_link(server)
    assert link is not None and link.startswith(f"{server.url}/setup/")  # the base URL
    token = link.rsplit("/", 1)[1]
    path = setup_link.token_file(settings.data_dir)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert token not in path.read_text()  # only its hash is kept

    # Before any account, /login answers and says how to make one; it never redirects.
    login = httpx.get(server.url + "/login", follow_redirects=False)
    assert login.status_code == 200 and 'id="first-account"' in login.text and "/setup/" in login.text
    assert httpx.get(server.url + "/", follow_redirects=False).headers["location"].startswith("/login")

    # Without the token, nobody gets the form.
    for wrong in (token[:-1] + ("A" if token[-1] != "A" else "B"), "x", "A" * 500):
        assert httpx.get(f"{server.url}/setup/{wrong}").status_code == 404
        assert httpx.post(f"{server.url}/setup/{wrong}", data={"name": "eve"}).status_code == 404

    with browser(server) as client:
        form = client.get(local(server, link))
        assert form.status_code == 200 and 'name="password2"' in form.text
        csrf = form_csrf(form)
        fields = {"name": "ann", "password": "correct horse", "password2": "correct horse"}
        forged = client.post(local(server, link), data={**fields, "csrf": "forged"})
        assert forged.status_code == 403
        differ = client.post(local(server, link), data={**fields, "password2": "horse", "csrf": csrf})
        assert differ.status_code == 400 and "differ" in differ.text
        bad_name = client.post(local(server, link), data={**fields, "name": "-ann", "csrf": csrf})
        assert bad_name.status_code == 400 and "not a usable name" in bad_name.text
        made = client.post(local(server, link), data={**fields, "csrf": csrf})
        assert made.status_code == 201 and 'id="created"' in made.text
        assert client.get(local(server, link)).status_code == 404  # used: valid once
        login = client.get("/login")
        assert 'id="first-account"' not in login.text
        signed_in = client.post(
            "/login",
            data={"name": "ann", "password": "correct horse", "csrf": form_csrf(login), "next": "/campaigns"},
            follow_redirects=False,
        )
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/campaigns"
        assert client.get("/campaigns").status_code == 200

    assert accounts(settings) == ["ann"]
    assert not path.exists()
    for _ in range(6):  # fresh connections, so both workers are asked
        assert httpx.get(local(server, link)).status_code == 404
        assert (
            httpx.post(local(server, link), data={**fields, "name": "eve", "csrf": csrf}).status_code == 404
        )
    assert 'id="first-account"' not in httpx.get(server.url + "/login").text
    assert accounts(settings) == ["ann"]


def test_a_fresh_link_each_start_and_none_once_an_account_exists(
    server_factory: type[Server], env: dict[str, str], settings: Settings
) -> None:
    first = server_factory(env=dict(env)).start()
    old = console_link(first)
    assert old is not None
    first.stop()
    second = server_factory(env=dict(env)).start()
    new = console_link(second)
    assert new is not None and new != old
    assert httpx.get(local(second, old)).status_code == 404
    assert httpx.get(local(second, new)).status_code == 200

    deadpixel("user", "create", "bob", "--password-stdin", input="pw\n", env=env, check=True)
    assert httpx.get(local(second, new)).status_code == 404  # an account exists: the link is dead
    second.kill()
    assert offer_setup_link(settings) is None  # what the next start does: no link, and the file is gone
    assert not setup_link.token_file(settings.data_dir).exists()


@pytest.mark.parametrize("racers", [4])
def test_two_submissions_at_once_make_one_account(
    server_factory: type[Server], env: dict[str, str], settings: Settings, racers: int
) -> None:
    server = server_factory(env=dict(env), workers=2).start()
    link = console_link(server)
    assert link is not None
    clients = [browser(server) for _ in range(racers)]
    forms = [(client, form_csrf(client.get(local(server, link)))) for client in clients]
    codes: list[int] = []

    def submit(i: int) -> None:
        client, csrf = forms[i]
        data = {"name": f"user{i}", "password": "pw", "password2": "pw", "csrf": csrf}
        codes.append(client.post(local(server, link), data=data, follow_redirects=False).status_code)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for client in clients:
        client.close()
    assert sorted(codes) == [201] + [404] * (racers - 1)
    assert len(accounts(settings)) == 1


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_in_a_real_browser_the_link_makes_the_account_and_signs_it_in(
    server_factory: type[Server], env: dict[str, str], settings: Settings
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")
    server = server_factory(env=dict(env)).start()
    link = console_link(server)
    assert link is not None
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(server.url + "/")
            assert page.url == server.url + "/login?next=/"
            assert "setup link" in page.locator("#first-account").inner_text()
            page.goto(local(server, link))
            page.fill("input[name=name]", "ann")
            page.fill("input[name=password]", "correct horse")
            page.fill("input[name=password2]", "correct horse")
            page.click("button[type=submit]")
            assert "ann" in page.locator("#created").inner_text()
            page.click("text=Sign in")
            page.fill("input[name=name]", "ann")
            page.fill("input[name=password]", "correct horse")
            page.click("button[type=submit]")
            page.wait_for_url(server.url + "/campaigns")
            assert page.locator(".who").inner_text() == "ann"
        finally:
            browser.close()
    assert accounts(settings) == ["ann"]
