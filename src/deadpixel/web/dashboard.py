"""The web dashboard: sign-in, campaigns, a campaign's numbers and charts, one message's events.

Server-rendered (Jinja2) and readable without JavaScript; the charts are inline SVG. Every page but the
sign-in form and the static files needs a signed-in account; without one it redirects to ``/login``.
Numbers come from ``deadpixel.reports.analytics``, the same functions the CLI and the JSON API use, and each
shows its definition.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy import Engine
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from deadpixel.accounts import access
from deadpixel.accounts.users import sign_in
from deadpixel.config import Settings
from deadpixel.errors import DeadpixelError
from deadpixel.reports import analytics, exports, segments, sendtime, variants
from deadpixel.reports.pixels import new_pixel
from deadpixel.security.tokens import TokenSigner
from deadpixel.store import audit, rollups, web_sessions
from deadpixel.store.roles import Role
from deadpixel.track.client_ip import ClientIPResolver
from deadpixel.web import charts, clickmap, forms, ranges, sending
from deadpixel.web import feed as live
from deadpixel.web.compose import ComposePages
from deadpixel.web.contacts import ContactsPage
from deadpixel.web.download import attachment
from deadpixel.web.sending import SendPages
from deadpixel.web.session import (
    LOGIN_CSRF_COOKIE,
    SESSION_SECONDS,
    Session,
    Sessions,
    load_secret,
    same_token,
)
from deadpixel.web.settings import SettingsPages
from deadpixel.web.setup import SetupPages
from deadpixel.web.users import UsersPages

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
FormReader = Callable[[Request], Awaitable[Any]]
SPARKLINE_DAYS = 14
RECIPIENTS_PER_PAGE = 50
MAX_PAGE = 1_000_000
MAX_SEARCH = 320  # the longest address there can be
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
        self.client_ip = ClientIPResolver.from_settings(settings)
        self.zone = ZoneInfo(settings.timezone)
        self.templates = Environment(
            loader=PackageLoader("deadpixel.web", "templates"),
            autoescape=select_autoescape(),
            auto_reload=False,
        )
        self.click_maps = clickmap.ClickMaps(settings.base_url + "/")
        self.templates.filters["duration"] = duration
        self.templates.filters["when"] = _when

    def routes(self) -> list[BaseRoute]:
        static = StaticFiles(directory=Path(__file__).parent / "static")
        page = self.guarded
        return [
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            page("/logout", self.logout, ["POST"]),
            page("/", self.home, ["GET"]),
            page("/campaigns", self.campaigns, ["GET"]),
            page("/campaigns/{name:path}", self.campaign, ["GET"]),
            page("/exports/{kind}.csv", self.export, ["GET"]),
            page("/segments/{who}.csv", self.segment_csv, ["GET"]),
            page("/feed", self.feed, ["GET"]),
            page("/messages/{id}", self.message, ["GET"]),
            page("/contacts", ContactsPage(self.read, self.render).show, ["GET"]),
            page("/pixels/new", self.new_pixel_form, ["GET"]),
            page("/pixels/new", self.new_pixel, ["POST"]),
            *self.settings_routes(),
            *UsersPages(self.engine, self.writer, self.render).routes(self.guarded),
            *self.compose_routes(),
            *self.setup_routes(),
            Mount("/static", app=static, name="static"),
        ]

    def compose_routes(self) -> list[BaseRoute]:
        """The New campaign page, and sending its draft as a stored campaign (deadpixel.web.sending)."""
        sends = SendPages(self.engine, self.writer, self.settings, self.render)
        compose = ComposePages(self.engine, self.writer, self.settings, self.render, send_draft=sends.ask)
        return [*compose.routes(self.guarded), *sends.routes(self.guarded)]

    def settings_routes(self) -> list[BaseRoute]:
        pages = SettingsPages(self.engine, self.writer, self.settings, self.render)
        page = self.guarded
        return [
            page("/settings", pages.show, ["GET"]),
            page("/settings/webhooks", pages.add_webhook, ["POST"]),
            page("/settings/webhooks/{id}/remove", pages.remove_webhook, ["POST"]),
            page("/settings/tokens", pages.create_token, ["POST"]),
            page("/settings/notices", pages.save_notices, ["POST"]),
            page("/settings/tokens/{id}/revoke", pages.revoke_token, ["POST"]),
        ]

    def setup_routes(self) -> list[BaseRoute]:
        """The first account's one-time link; the sign-in page points to it while it waits."""
        pages = SetupPages(self.engine, self.writer, self.settings, self.sessions, self.render)
        self.templates.globals["setup_pending"] = pages.pending
        return pages.routes()

    # --- plumbing -------------------------------------------------------------------------------------

    def render(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = self.templates.get_template(template).render(**context)
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)

    def guarded(self, path: str, page: Page, methods: list[str], form: FormReader = forms.read_form) -> Route:
        """A signed-in page whose least role comes from the one table (deadpixel.accounts.access); a path
        the table does not name stops the app from being built. ``form`` parses a POST's body (bounded)
        before its CSRF token is checked; the page gets the same parsed form."""
        roles = {method: access.needed(method, path) for method in methods}
        for method, role in roles.items():
            if role is None:
                raise access.MissingRule(f"{method} {path} is public: route it without a sign-in")
        return Route(path, self.signed_in(page, roles, form), methods=methods)

    def signed_in(
        self, page: Page, roles: dict[str, Role | None], read_form: FormReader = forms.read_form
    ) -> Callable[[Request], Awaitable[Response]]:
        async def guarded(request: Request) -> Response:
            session = await self.session(request)
            if session is None:
                target = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
                return RedirectResponse(f"/login?next={target}", status_code=303)
            role = roles.get("GET" if request.method == "HEAD" else request.method) or Role.OWNER
            if not session.role.allows(role):
                message = f"This needs the {role.label} role; your account is a {session.role.label}."
                return self.render("error.html", 403, session=session, message=message)
            if request.method == "POST":
                form = await read_form(request)
                if not same_token(form.get("csrf"), session.csrf):
                    return self.render("error.html", 403, message="The form expired; reload the page.")
            return await page(request, session)

        return guarded

    async def session(self, request: Request) -> Session | None:
        """The request's session, if its cookie names one the store still holds."""
        session_id = self.sessions.session_id(request)
        if session_id is None:
            return None
        found = await self.read(web_sessions.find, session_id, time.time())
        return None if found is None else Session(session_id, found.user, found.csrf, found.role)

    async def write(self, work: Callable[..., Any], *args: Any) -> Any:
        def run() -> Any:
            with self.writer.begin() as conn:
                return work(conn, *args)

        return await asyncio.to_thread(run)

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
        form = await forms.read_form(request)
        target = _safe_next(str(form.get("next") or ""))
        if not same_token(form.get("csrf"), request.cookies.get(LOGIN_CSRF_COOKIE)):
            return self.login_page(request, target, 403, "The sign-in form expired. Please try again.")
        peer = request.client.host if request.client else None
        client = self.client_ip.resolve(peer, request.scope["headers"])
        name, password = str(form.get("name") or ""), str(form.get("password") or "")
        result = await sign_in(self.writer, client or "?", name, password)
        if result.retry_after:
            response = self.login_page(request, target, 429, "Too many failed sign-ins. Try again later.")
            response.headers["retry-after"] = str(result.retry_after)
            return response
        if not result.ok:
            return self.login_page(request, target, 401, "Wrong name or password.")
        redirect = RedirectResponse(target, status_code=303)
        session_id = await self.write(web_sessions.start, name, time.time(), SESSION_SECONDS)
        self.sessions.start(redirect, session_id)
        return redirect

    async def logout(self, request: Request, session: Session) -> Response:
        await self.write(web_sessions.end, session.id)
        response = RedirectResponse("/login", status_code=303)
        self.sessions.end(response)
        return response

    # --- pages ----------------------------------------------------------------------------------------

    async def home(self, request: Request, session: Session) -> Response:
        return RedirectResponse("/campaigns", status_code=303)

    async def fold(self) -> None:
        """Bring the charts' rollups up to date with the opens committed since the last page asked."""
        await asyncio.to_thread(rollups.refresh, self.writer, self.engine)

    async def campaigns(self, request: Request, session: Session) -> Response:
        await self.fold()

        def gather(conn: Any) -> dict[str, Any]:
            per_day = analytics.opens_per_day(conn, SPARKLINE_DAYS)
            return {
                "campaigns": analytics.list_campaigns(conn),
                "overall": analytics.report(conn),
                "sparklines": {name: charts.sparkline(values) for name, values in per_day.items()},
            }

        data = await self.read(gather)
        return self.render("campaigns.html", session=session, sparkline_days=SPARKLINE_DAYS, **data)

    async def campaign(self, request: Request, session: Session) -> Response:
        name = request.path_params["name"]
        try:
            view = recipient_view(request.query_params)
        except BadParameter as exc:
            return self.render("error.html", 400, session=session, message=str(exc))
        shown = ranges.parse(request.query_params.get("range"))
        if shown is None:
            message = f"range must be one of {', '.join(r.key for r in ranges.RANGES)}."
            return self.render("error.html", 400, session=session, message=message)
        await self.fold()

        def numbers(conn: Any) -> dict[str, Any]:
            found = analytics.headline(conn, name)
            waits = found["time_to_first_open"]
            return {
                "report": found,
                "bounce_notice": analytics.sender_side_notice(found["bounces"]["sender_side"]),
                "time_to_open": charts.time_to_open(waits["buckets"]) if waits["messages"] else None,
                "ab": variants.ab_test(conn, name),
                "click_maps": self.click_maps.get(conn, name),
                "best_hours": sendtime.audience_hours(conn, name, self.zone),
                "sending": sending.panel(conn, name, session.role),
            }

        def series(conn: Any) -> dict[str, Any]:
            found = analytics.chart_data(conn, name, self.zone, shown.window(time.time()))
            over_time = found["opens_over_time"]
            by_day = over_time["daily"] if len(over_time["daily"]) > 1 else []  # one day: the hours say it
            # Drawn here, in a worker thread, so the event loop keeps answering pixels meanwhile.
            return {
                "series": found,
                "hourly": charts.opens_by_hour(over_time["hourly"]) if over_time["hourly"] else None,
                "daily": charts.opens_over_time(by_day) if by_day else None,
                "heat": charts.heat_levels(found["heatmap"]["cells"]),
                "breakdowns": [
                    (TITLES[field], charts.breakdown_bars(TITLES[field], rows))
                    for field, rows in found["breakdowns"].items()
                    if rows
                ],
            }

        def listed(conn: Any) -> tuple[list[dict[str, Any]], int]:
            within = segments.addresses(conn, segments.Segment(view.segment, name)) if view.segment else None
            return analytics.recipients(conn, name, view, within)

        try:
            # Four connections at once: the databases scan the message rows while the charts are drawn.
            head, drawn, (rows, matching), groups = await asyncio.gather(
                self.read(numbers),
                self.read(series),
                self.read(listed),
                self.read(segments.campaign_overview, name),
            )
        except analytics.UnknownCampaign:
            return self.render("error.html", 404, session=session, message=f"No campaign named {name!r}.")
        head["report"].update(drawn.pop("series"))
        return self.render(
            "campaign.html",
            session=session,
            name=name,
            recipients=rows,
            segments=groups,
            view=view,
            ranges=ranges.RANGES,
            shown_range=shown,
            matching=matching,
            pages=max(1, -(-matching // view.per_page)),
            link=partial(_recipients_link, request.url.path, view),
            **head,
            **drawn,
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
        name = f"{campaign or 'all'}-{kind}.csv"  # the campaign's name may hold anything: see web.download
        return StreamingResponse(
            exports.stream(self.engine, kind, campaign),
            media_type="text/csv; charset=utf-8",
            headers={
                "content-disposition": attachment(name),
                **SECURITY_HEADERS,
            },
        )

    async def segment_csv(self, request: Request, session: Session) -> Response:
        """One of a campaign's segments (``?campaign=``) as CSV: the same rows as the API's."""
        who, campaign = request.path_params["who"], request.query_params.get("campaign")
        if who not in segments.CAMPAIGN_SEGMENTS or not _usable_campaign(campaign) or campaign is None:
            return self.render("error.html", 404, session=session, message="No such segment.")
        try:
            rows = await self.read(segments.members, segments.Segment(who, campaign))
        except analytics.UnknownCampaign:
            return self.render("error.html", 404, session=session, message=f"No campaign named {campaign!r}.")
        return StreamingResponse(
            segments.csv_chunks(rows),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": attachment(f"{campaign}-{who}.csv"), **SECURITY_HEADERS},
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
        form = await forms.read_form(request)
        fields = {name: str(form.get(name) or "").strip() for name in ("to", "subject", "campaign", "notify")}
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
                made = new_pixel(
                    conn, self.settings, self.signer, recipient=fields["to"],
                    subject=fields["subject"] or None, campaign=fields["campaign"] or None,
                    notify=bool(fields["notify"]),
                )  # fmt: skip
                audit.record(conn, session.user, "pixel.create", _pixel_target(made))
                return made

        made = await asyncio.to_thread(make)
        return self.render("pixel.html", session=session, made=made, form={}, error=None)


def duration(seconds: float | None) -> str:
    """A wait as a person says it: 45 s, 12 min, 3.5 h, 2.1 days; a dash when there is none."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


class BadParameter(DeadpixelError, ValueError):
    """A query parameter the page cannot use; the message says which and what it takes."""


def recipient_view(query: Any) -> analytics.RecipientView:
    """The recipients table's search, sort and page from the query string, checked before any SQL."""
    search = str(query.get("q", "")).strip()
    if len(search) > MAX_SEARCH:
        raise BadParameter(f"The search (q) is longer than {MAX_SEARCH} characters.")
    if "\x00" in search:
        raise BadParameter("The search (q) cannot contain a NUL character.")
    sort = query.get("sort", "status")
    if sort not in analytics.RECIPIENT_SORTS:
        raise BadParameter(f"sort must be one of {', '.join(analytics.RECIPIENT_SORTS)}.")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise BadParameter("order must be asc or desc.")
    raw_page = query.get("page", "1")
    if not (raw_page.isascii() and raw_page.isdigit() and 1 <= int(raw_page) <= MAX_PAGE):
        raise BadParameter(f"page must be a whole number from 1 to {MAX_PAGE}.")
    segment = query.get("segment", "")
    if segment and segment not in segments.CAMPAIGN_SEGMENTS:
        raise BadParameter(f"segment must be one of {', '.join(segments.CAMPAIGN_SEGMENTS)}.")
    return analytics.RecipientView(
        search, sort, order == "desc", int(raw_page), RECIPIENTS_PER_PAGE, segment=segment
    )


def _recipients_link(path: str, view: analytics.RecipientView, **changes: Any) -> str:
    """The page's own URL with some of the table's parameters changed (a new sort starts at page 1)."""
    wanted = {
        "q": view.search, "segment": view.segment, "sort": view.sort,
        "order": "desc" if view.descending else "asc", "page": 1,
    }  # fmt: skip
    if "segment" in changes:
        changes.setdefault("page", 1)
    if "page" not in changes:
        changes["page"] = 1 if "sort" in changes or "order" in changes else view.page
    wanted.update(changes)
    query = {k: v for k, v in wanted.items() if v not in ("", None)}
    return quote(path) + "?" + urlencode(query) + "#recipients"


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


def _pixel_target(made: dict[str, Any]) -> str:
    """A new pixel as the audit log names it: its message id and campaign, never the recipient's address."""
    campaign = made.get("campaign")
    return f"{made['message_id']}" + (f" in {campaign}" if campaign else "")
