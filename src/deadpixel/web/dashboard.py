"""The web dashboard: sign-in, campaigns, a campaign's numbers and charts, one message's events.

Server-rendered (Jinja2) and readable without JavaScript; the charts are inline SVG. Every page but the
sign-in form and the static files needs a signed-in account; without one it redirects to ``/login``.
Numbers come from ``deadpixel.analytics``, the same functions the CLI and the JSON API use, and each shows
its definition.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy import Engine
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from deadpixel import analytics, exports
from deadpixel.config import Settings
from deadpixel.pixels import new_pixel
from deadpixel.tokens import TokenSigner
from deadpixel.users import authenticate, session_stamp
from deadpixel.web import charts
from deadpixel.web import feed as live
from deadpixel.web.session import LOGIN_CSRF_COOKIE, LoginBrake, Session, Sessions, load_secret, same_token
from deadpixel.web.settings import SettingsPages

SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
}
Page = Callable[[Request, Session], Awaitable[Response]]
TITLES = {"kind": "Verdict", "client": "Mail client", "device": "Device", "os": "OS", "country": "Country"}


class Dashboard:
    def __init__(self, engine: Engine, settings: Settings, signer: TokenSigner, writer: Engine) -> None:
        self.engine = engine
        self.writer = writer  # takes SQLite's write lock up front, so a write waits instead of failing
        self.settings = settings
        self.signer = signer
        self.sessions = Sessions(
            load_secret(settings.data_dir / "session-secret"), secure=settings.base_url.startswith("https://")
        )
        self.brake = LoginBrake()
        self.templates = Environment(
            loader=PackageLoader("deadpixel.web", "templates"),
            autoescape=select_autoescape(),
            auto_reload=False,
        )
        self.templates.filters["when"] = _when

    def routes(self) -> list[BaseRoute]:
        static = StaticFiles(directory=Path(__file__).parent / "static")
        return [
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.signed_in(self.logout), methods=["POST"]),
            Route("/", self.signed_in(self.home)),
            Route("/campaigns", self.signed_in(self.campaigns)),
            Route("/campaigns/{name:path}", self.signed_in(self.campaign)),
            Route("/exports/{kind}.csv", self.signed_in(self.export), methods=["GET"]),
            Route("/feed", self.signed_in(self.feed), methods=["GET"]),
            Route("/messages/{id}", self.signed_in(self.message)),
            Route("/pixels/new", self.signed_in(self.new_pixel_form), methods=["GET"]),
            Route("/pixels/new", self.signed_in(self.new_pixel), methods=["POST"]),
            *self.settings_routes(),
            Mount("/static", app=static, name="static"),
        ]

    def settings_routes(self) -> list[BaseRoute]:
        pages = SettingsPages(self.engine, self.writer, self.settings, self.render)
        return [
            Route("/settings", self.signed_in(pages.show), methods=["GET"]),
            Route("/settings/webhooks", self.signed_in(pages.add_webhook), methods=["POST"]),
            Route("/settings/webhooks/{id}/remove", self.signed_in(pages.remove_webhook), methods=["POST"]),
            Route("/settings/tokens", self.signed_in(pages.create_token), methods=["POST"]),
            Route("/settings/tokens/{id}/revoke", self.signed_in(pages.revoke_token), methods=["POST"]),
        ]

    # --- plumbing -------------------------------------------------------------------------------------

    def render(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = self.templates.get_template(template).render(**context)
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)

    def signed_in(self, page: Page) -> Callable[[Request], Awaitable[Response]]:
        async def guarded(request: Request) -> Response:
            session = self.sessions.read(request)
            if session is None or not same_token(session.stamp, await self.read(session_stamp, session.user)):
                target = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
                return RedirectResponse(f"/login?next={target}", status_code=303)
            if request.method == "POST":
                form = await request.form()
                if not same_token(form.get("csrf"), session.csrf):
                    return self.render("error.html", 403, message="The form expired; reload the page.")
            return await page(request, session)

        return guarded

    async def read(self, work: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        def run() -> Any:
            with self.engine.connect() as conn:
                return work(conn, *args, **kwargs)

        return await asyncio.to_thread(run)

    # --- sign-in --------------------------------------------------------------------------------------

    def login_page(
        self, request: Request, target: str, status: int = 200, error: str | None = None
    ) -> Response:
        token = self.sessions.login_page_token(request)
        response = self.render("login.html", status, csrf=token, next=target, error=error)
        self.sessions.remember_login_token(response, token)
        return response

    async def login_form(self, request: Request) -> Response:
        return self.login_page(request, _safe_next(request.query_params.get("next")))

    async def login(self, request: Request) -> Response:
        client = request.client.host if request.client else "?"
        form = await request.form()
        target = _safe_next(str(form.get("next") or ""))
        wait = self.brake.retry_after(client)
        if wait:
            response = self.login_page(request, target, 429, "Too many failed sign-ins. Try again later.")
            response.headers["retry-after"] = str(wait)
            return response
        if not same_token(form.get("csrf"), request.cookies.get(LOGIN_CSRF_COOKIE)):
            return self.login_page(request, target, 403, "The sign-in form expired. Please try again.")
        name, password = str(form.get("name") or ""), str(form.get("password") or "")
        if not await self.read(authenticate, name, password):
            self.brake.failed(client)
            return self.login_page(request, target, 401, "Wrong name or password.")
        redirect = RedirectResponse(target, status_code=303)
        self.sessions.start(redirect, name, await self.read(session_stamp, name))
        return redirect

    async def logout(self, request: Request, session: Session) -> Response:
        response = RedirectResponse("/login", status_code=303)
        self.sessions.end(response)
        return response

    # --- pages ----------------------------------------------------------------------------------------

    async def home(self, request: Request, session: Session) -> Response:
        return RedirectResponse("/campaigns", status_code=303)

    async def campaigns(self, request: Request, session: Session) -> Response:
        found = await self.read(analytics.list_campaigns)
        overall = await self.read(analytics.report)
        return self.render("campaigns.html", session=session, campaigns=found, overall=overall)

    async def campaign(self, request: Request, session: Session) -> Response:
        name = request.path_params["name"]

        def gather(conn: Any) -> dict[str, Any]:
            return {
                "report": analytics.report(conn, name),
                "days": analytics.opens_by_day(conn, name),
                "breakdowns": {f: analytics.breakdown(conn, name, f) for f in analytics.BREAKDOWNS},
                "recipients": analytics.list_messages(conn, campaign=name, limit=200),
            }

        try:
            data = await self.read(gather)
        except analytics.UnknownCampaign:
            return self.render("error.html", 404, session=session, message=f"No campaign named {name!r}.")
        return self.render(
            "campaign.html",
            session=session,
            name=name,
            report=data["report"],
            recipients=data["recipients"],
            timeline=charts.opens_over_time(data["days"]) if data["days"] else None,
            breakdowns=[
                (TITLES[field], charts.breakdown_bars(TITLES[field], rows))
                for field, rows in data["breakdowns"].items()
                if rows
            ],
        )

    async def export(self, request: Request, session: Session) -> Response:
        """A campaign's (or, without ``?campaign=``, every) opens, clicks or recipients as CSV, streamed."""
        kind, campaign = request.path_params["kind"], request.query_params.get("campaign")
        if kind not in exports.KINDS or not _usable_campaign(campaign):
            return self.render("error.html", 404, session=session, message="No such export.")
        try:
            await self.read(exports.query, kind, campaign)
        except analytics.UnknownCampaign:
            return self.render("error.html", 404, session=session, message=f"No campaign named {campaign!r}.")
        filename = f"{campaign or 'all'}-{kind}.csv".encode("ascii", "replace").decode().replace('"', "_")
        return StreamingResponse(
            exports.stream(self.engine, kind, campaign),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="{filename}"', **SECURITY_HEADERS},
        )

    async def feed(self, request: Request, session: Session) -> Response:
        """Server-sent events: each new open and click (only of ``?campaign=`` when given) once stored."""

        campaign = request.query_params.get("campaign") or None
        if not _usable_campaign(campaign):
            return self.render("error.html", 404, session=session, message="No such campaign.")

        cursor = live.Cursor.parse(request.headers.get("last-event-id"))
        events = live.stream(self.engine, cursor, campaign)
        headers = {**SECURITY_HEADERS, "cache-control": "no-store", "x-accel-buffering": "no"}
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)

    async def message(self, request: Request, session: Session) -> Response:
        message_id = request.path_params["id"]
        found = await self.read(analytics.get_message, message_id)
        if found is None:
            return self.render("error.html", 404, session=session, message="No such message.")
        events = await self.read(analytics.list_opens, message_id=message_id, limit=500)
        clicks = await self.read(analytics.list_clicks, message_id=message_id, limit=500)
        return self.render("message.html", session=session, message=found, opens=events, clicks=clicks)

    async def new_pixel_form(self, request: Request, session: Session) -> Response:
        return self.render("pixel.html", session=session, made=None, error=None, form={})

    async def new_pixel(self, request: Request, session: Session) -> Response:
        """A tracked message for mail sent from Gmail, Outlook or any client: the snippet to paste."""
        form = await request.form()
        fields = {name: str(form.get(name) or "").strip() for name in ("to", "subject", "campaign")}
        if not _looks_like_address(fields["to"]):
            return self.render(
                "pixel.html",
                400,
                session=session,
                made=None,
                form=fields,
                error="Enter the recipient's address.",
            )

        def make() -> dict[str, Any]:
            with self.writer.begin() as conn:
                return new_pixel(
                    conn, self.settings, self.signer, recipient=fields["to"],
                    subject=fields["subject"] or None, campaign=fields["campaign"] or None,
                )  # fmt: skip

        made = await asyncio.to_thread(make)
        return self.render("pixel.html", session=session, made=made, form={}, error=None)


def _looks_like_address(value: str) -> bool:
    local, at, domain = value.rpartition("@")
    return bool(at and local and "." in domain and not any(c.isspace() for c in value)) and len(value) <= 320


def _when(at: float) -> str:
    """A stored time as the pages show it: to the minute, in UTC."""
    return (analytics.iso(at) or "")[:16].replace("T", " ") + " UTC"


def _usable_campaign(name: str | None) -> bool:
    """None (every campaign) or a name the database can be asked about: PostgreSQL refuses NUL in text."""
    return name is None or (0 < len(name) <= 200 and "\x00" not in name)


def _safe_next(target: str | None) -> str:
    """Only a path on this site: never an open redirect after sign-in."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/campaigns"
    return target
