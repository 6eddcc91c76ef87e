"""``/setup/<token>``: the first account, created in the browser with the one-time link from the console.

The page exists only while no account exists and only for the current token
(deadpixel.accounts.setup_link); any other token, a used one, or any token once an account exists gets the
same plain 404 as a path that was never there. The form is CSRF-protected like the sign-in form (a
double-submit cookie) and asks for the password twice. The new account then signs in with the ordinary
form, so sign-in stays in one place.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from deadpixel.accounts import setup_link
from deadpixel.accounts.users import UserError, check_name, create_user, has_users
from deadpixel.config import Settings
from deadpixel.web.forms import read_form
from deadpixel.web.session import LOGIN_CSRF_COOKIE, Sessions, same_token

Render = Callable[..., Response]
MAX_TOKEN = 100  # longer than any token deadpixel makes


def not_found() -> Response:
    return PlainTextResponse("Not Found", status_code=404)


class SetupPages:
    def __init__(
        self, reader: Engine, writer: Engine, settings: Settings, sessions: Sessions, render: Render
    ) -> None:
        self.reader = reader
        self.writer = writer  # takes SQLite's write lock up front
        self.settings = settings
        self.sessions = sessions
        self.render = render

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/setup/{token}", self.form, methods=["GET"]),
            Route("/setup/{token}", self.create, methods=["POST"]),
        ]

    def pending(self) -> bool:
        """Whether a setup link is waiting to be used (the sign-in page then points to it); a file check,
        no database read, so the sign-in page costs what it did."""
        return setup_link.token_file(self.settings.data_dir).exists()

    async def _open(self, token: str) -> bool:
        """Whether the link works now: the current token, and still no account."""
        if len(token) > MAX_TOKEN or not setup_link.matches(self.settings.data_dir, token):
            return False

        def no_account() -> bool:
            with self.reader.connect() as conn:
                return not has_users(conn)

        return await asyncio.to_thread(no_account)

    def page(self, request: Request, token: str, status: int = 200, **context: Any) -> Response:
        csrf = self.sessions.login_page_token(request)
        response = self.render("setup.html", status, csrf=csrf, token=token, **context)
        self.sessions.remember_login_token(response, csrf)
        return response

    async def form(self, request: Request) -> Response:
        token = request.path_params["token"]
        if not await self._open(token):
            return not_found()
        return self.page(request, token)

    async def create(self, request: Request) -> Response:
        token = request.path_params["token"]
        if not await self._open(token):
            return not_found()
        form = await read_form(request)
        name = str(form.get("name") or "").strip()
        password, again = str(form.get("password") or ""), str(form.get("password2") or "")
        if not same_token(form.get("csrf"), request.cookies.get(LOGIN_CSRF_COOKIE)):
            return self.page(request, token, 403, name=name, error="The form expired. Please try again.")
        try:
            check_name(name)
            if not password:
                raise UserError("the password is empty")
        except UserError as exc:
            return self.page(request, token, 400, name=name, error=str(exc))
        if password != again:
            return self.page(request, token, 400, name=name, error="The two passwords differ.")
        claim = setup_link.claim(self.settings.data_dir, token)
        if claim is None:
            return not_found()

        def make() -> bool:
            with self.writer.begin() as conn:
                if has_users(conn):  # made meanwhile with `deadpixel user create`
                    return False
                create_user(conn, name, password)
                return True

        try:
            made = await asyncio.to_thread(make)
        except UserError as exc:
            claim.give_back()
            return self.page(request, token, 400, name=name, error=str(exc))
        except Exception:
            claim.give_back()
            raise
        claim.done()
        if not made:
            return not_found()
        return self.render("setup.html", 201, created=name)
