"""The Contacts page: counts per state and tag, and the contacts, filtered by tag and state, 200 a page."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import Response

from deadpixel.reports.audience import contact_rows, overview
from deadpixel.store.contacts import MAX_TAG, STATES

PAGE = 200

Read = Callable[..., Awaitable[Any]]
Render = Callable[..., Response]


class ContactsPage:
    def __init__(self, read: Read, render: Render) -> None:
        self.read = read
        self.render = render

    async def show(self, request: Request, session: Any) -> Response:
        query = request.query_params
        tag, state, after = query.get("tag") or None, query.get("state") or None, query.get("after")
        problem = None
        if tag is not None and (len(tag) > MAX_TAG or "\x00" in tag):
            problem = f"A tag has at most {MAX_TAG} characters."
        elif state is not None and state not in STATES:
            problem = f"The state is one of {', '.join(STATES)}."
        elif after is not None and not (after.isascii() and after.isdigit() and len(after) <= 18):
            problem = "That page does not exist."
        if problem is not None:
            return self.render("error.html", 400, session=session, message=problem)

        def gather(conn: Connection) -> dict[str, Any]:
            rows = contact_rows(
                conn, tag=tag, state=state, limit=PAGE + 1, after=int(after) if after else None
            )
            return {"summary": overview(conn, tag), "contacts": rows[:PAGE], "more": len(rows) > PAGE}

        data = await self.read(gather)
        return self.render("contacts.html", session=session, tag=tag, state=state, states=STATES, **data)
