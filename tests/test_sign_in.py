"""Signing in against a real ``deadpixel serve``: the brake behind a proxy and under concurrent guessing,
sessions that end on the server, braked API token guessing, and pages no other site may frame."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx
import pytest
from sqlalchemy import func, insert, select

from deadpixel.accounts.users import SIGN_IN_TRIES, create_user
from deadpixel.config import Settings
from deadpixel.store.db import create_engine
from deadpixel.store.schema import web_sessions

from .conftest import Server
from .helpers import deadpixel

PASSWORD = "correct horse"
PROXY = {"DEADPIXEL_TRUSTED_PROXIES": "127.0.0.1"}  # the test client plays the proxy
ATTACKER = "203.0.113.9"
READER = "198.51.100.7"
# What these check does not depend on the database; the brake and the sessions run on both.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def add_user(settings: Settings, name: str = "ann") -> None:
    engine = create_engine(settings.database_url)
    with engine.begin() as conn:
        create_user(conn, name, PASSWORD)
    engine.dispose()


def login_form(client: httpx.Client) -> str:
    page = client.get("/login")
    assert page.status_code == 200
    return page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]


def sign_in(
    client: httpx.Client, password: str, address: str | None = None, name: str = "ann"
) -> httpx.Response:
    headers = {"x-forwarded-for": address} if address else {}
    form = {"csrf": login_form(client), "name": name, "password": password, "next": "/campaigns"}
    return client.post("/login", data=form, headers=headers, follow_redirects=False)


def test_wrong_passwords_through_a_proxy_lock_out_only_their_own_address(
    server_factory: type[Server], env: dict[str, str], settings: Settings
) -> None:
    add_user(settings)
    add_user(settings, "bob")
    server = server_factory(env={**env, **PROXY}).start()
    with httpx.Client(base_url=server.url) as attacker, httpx.Client(base_url=server.url) as reader:
        statuses = [sign_in(attacker, f"guess {i}", ATTACKER).status_code for i in range(SIGN_IN_TRIES)]
        assert statuses == [401] * SIGN_IN_TRIES
        braked = sign_in(attacker, PASSWORD, ATTACKER)  # even the right password: the pair is braked
        assert braked.status_code == 429 and 590 <= int(braked.headers["retry-after"]) <= 600
        assert sign_in(attacker, "guess", ATTACKER, name="bob").status_code == 401  # another account
        # Everyone comes through the same proxy; the reader at another address is not locked out.
        assert sign_in(reader, PASSWORD, READER).status_code == 303
        assert reader.get("/campaigns").status_code == 200


def test_concurrent_guesses_on_two_workers_cannot_overshoot_the_brake(
    server_factory: type[Server], env: dict[str, str], settings: Settings
) -> None:
    add_user(settings)
    server = server_factory(env={**env, **PROXY}, workers=2).start()

    async def attack() -> list[int]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            page = await client.get("/login")
            csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
            form = {"csrf": csrf, "name": "ann", "next": "/campaigns"}
            headers = {"x-forwarded-for": ATTACKER}
            answers = await asyncio.gather(
                *(
                    client.post("/login", data={**form, "password": f"g{i}"}, headers=headers)
                    for i in range(60)
                )
            )
            return [answer.status_code for answer in answers]

    statuses = Counter(asyncio.run(attack()))
    assert statuses == {401: SIGN_IN_TRIES, 429: 60 - SIGN_IN_TRIES}


def test_signing_out_ends_the_session_on_the_server_even_for_a_copied_cookie(
    server: Server, settings: Settings
) -> None:
    add_user(settings)
    engine = create_engine(settings.database_url)
    with engine.begin() as conn:  # a session that ran out long ago
        conn.execute(
            insert(web_sessions).values(
                id_hash="x" * 64, user_name="ann", csrf="c", created_at=0, expires_at=1
            )
        )
    with httpx.Client(base_url=server.url) as browser, httpx.Client(base_url=server.url) as thief:
        assert sign_in(browser, PASSWORD).status_code == 303
        page = browser.get("/campaigns")
        assert page.status_code == 200
        with engine.connect() as conn:  # signing in purged the expired one; the cookie's id is not stored
            stored = conn.execute(select(web_sessions.c.id_hash)).scalars().all()
        assert len(stored) == 1 and stored[0] != "x" * 64
        assert browser.cookies["deadpixel_session"] not in stored[0]
        thief.cookies.update(browser.cookies)
        assert thief.get("/campaigns").status_code == 200
        csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        assert browser.post("/logout", data={"csrf": csrf}).status_code == 303
        copied = thief.get("/campaigns", follow_redirects=False)
        assert copied.status_code == 303 and copied.headers["location"].startswith("/login")
        # deadpixel user passwd ends the other sessions too (test_dashboard covers it for a copied cookie)
        assert sign_in(browser, PASSWORD).status_code == 303
        deadpixel("user", "passwd", "ann", "--password-stdin", input="another one\n", check=True)
        assert browser.get("/campaigns", follow_redirects=False).status_code == 303
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(web_sessions)).scalar_one() == 0
    engine.dispose()


def new_token(name: str) -> str:
    made = deadpixel("token", "create", name, check=True)
    return made.stdout.strip()


@SQLITE_ONLY
@pytest.mark.serial
def test_guessing_api_tokens_is_braked_per_address_without_slowing_valid_tokens(
    server_factory: type[Server], env: dict[str, str], settings: Settings
) -> None:
    secret = new_token("reports")
    server = server_factory(env={**env, **PROXY}).start()
    url = server.url + "/api/v1/campaigns"

    def get(token: str, address: str) -> httpx.Response:
        return httpx.get(url, headers={"authorization": f"Bearer {token}", "x-forwarded-for": address})

    statuses = [get(f"dp_made_up_{i}", ATTACKER).status_code for i in range(30)]
    assert statuses == [401] * 10 + [429] * 20
    braked = get("dp_made_up_more", ATTACKER)
    assert braked.status_code == 429 and 1 <= int(braked.headers["retry-after"]) <= 60
    assert braked.json() == {"error": "too many invalid tokens from this address"}
    started = time.monotonic()  # a valid client behind the guesser's address, new to this server
    assert all(get(secret, ATTACKER).status_code == 200 for _ in range(5))
    assert time.monotonic() - started < 5
    assert get("dp_made_up_elsewhere", READER).status_code == 401  # other addresses are not braked
    deadpixel("token", "revoke", "reports", check=True)
    assert get(secret, ATTACKER).status_code == 401  # a revocation still counts at once


@pytest.mark.parametrize("shared_server", ["sqlite"], indirect=True)
def test_no_page_may_be_framed(shared_server: Server) -> None:
    with httpx.Client(base_url=shared_server.url) as client:
        for path in (
            "/login",
            "/campaigns",  # a redirect to the sign-in
            "/static/style.css",
            "/u/not-a-token",
            "/healthz",
            "/api/v1/campaigns",
            "/api/v1/openapi.json",
            "/no/such/page",
        ):
            answer = client.get(path, follow_redirects=False)
            assert answer.headers["x-frame-options"] == "DENY", path
            assert "frame-ancestors 'none'" in answer.headers["content-security-policy"], path
        login = client.get("/login").headers["content-security-policy"]
        assert login.count("frame-ancestors") == 1 and "script-src 'self'" in login
