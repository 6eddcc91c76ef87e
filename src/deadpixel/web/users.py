"""The dashboard's Users page (owners only, see deadpixel.accounts.access): list accounts, change a role,
create or delete an account. The last owner can be neither demoted nor deleted; every change is audited
under the signed-in owner's name, in the transaction that makes it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Engine
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from deadpixel.accounts.users import UserError, create_user, delete_user, list_users, set_role
from deadpixel.store import audit
from deadpixel.store.roles import ROLE_NAMES, Role, RoleError, parse_role
from deadpixel.web.forms import read_form
from deadpixel.web.session import Session

Render = Callable[..., Response]
Guard = Callable[[str, Any, list[str]], BaseRoute]


class UsersPages:
    def __init__(self, reader: Engine, writer: Engine, render: Render) -> None:
        self.reader = reader
        self.writer = writer  # takes SQLite's write lock up front
        self.render = render

    def routes(self, guarded: Guard) -> list[BaseRoute]:
        return [
            guarded("/users", self.show, ["GET"]),
            guarded("/users", self.create, ["POST"]),
            guarded("/users/{name}/role", self.change_role, ["POST"]),
            guarded("/users/{name}/delete", self.delete, ["POST"]),
        ]

    async def _run(self, engine: Engine, work: Callable[[Connection], Any]) -> Any:
        def run() -> Any:
            with engine.begin() as conn:
                return work(conn)

        return await asyncio.to_thread(run)

    async def page(self, session: Session, status: int = 200, **shown: Any) -> Response:
        found = await self._run(self.reader, list_users)
        return self.render("users.html", status, session=session, users=found, roles=ROLE_NAMES, **shown)

    async def show(self, request: Request, session: Session) -> Response:
        return await self.page(session)

    async def create(self, request: Request, session: Session) -> Response:
        form = await read_form(request)
        name, password = str(form.get("name") or "").strip(), str(form.get("password") or "")

        def make(conn: Connection) -> None:
            role = parse_role(str(form.get("role") or "viewer"))
            create_user(conn, name, password, role)
            audit.record(conn, session.user, "user.create", f"{name} ({role.label})")

        try:
            await self._run(self.writer, make)
        except (UserError, RoleError) as exc:
            return await self.page(session, 400, error=str(exc), name=name)
        return await self.page(session, 201, notice=f"Account {name} created.")

    async def change_role(self, request: Request, session: Session) -> Response:
        name = str(request.path_params["name"])
        form = await read_form(request)

        def change(conn: Connection) -> Role:
            role = parse_role(str(form.get("role") or ""))
            before = set_role(conn, name, role)
            audit.record(conn, session.user, "user.role", f"{name}: {before.label} -> {role.label}")
            return role

        try:
            role = await self._run(self.writer, change)
        except (UserError, RoleError) as exc:
            return await self.page(session, 400, error=str(exc))
        return await self.page(session, notice=f"{name} is now {role.label}.")

    async def delete(self, request: Request, session: Session) -> Response:
        name = str(request.path_params["name"])

        def remove(conn: Connection) -> None:
            delete_user(conn, name)
            audit.record(conn, session.user, "user.delete", name)

        try:
            await self._run(self.writer, remove)
        except UserError as exc:
            return await self.page(session, 400, error=str(exc))
        return await self.page(session, notice=f"Account {name} deleted.")
