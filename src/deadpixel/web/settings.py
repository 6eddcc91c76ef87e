"""The dashboard's settings page: what the server is configured with, webhooks and API tokens.

Configuration is shown read-only with the DEADPIXEL_* setting that changes each value (it is read once, at
start-up, by every server process, so a form could not change it for all of them). Webhooks and tokens are
managed here; a new webhook's signing secret and a new token's secret are shown on the page that answers
the form, once, and never again. Every form carries the session's CSRF token (checked by ``signed_in``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Connection, Engine
from starlette.requests import Request
from starlette.responses import Response

from deadpixel.config import NOTIFY_FORMATS, Settings, email_address_problem, notify_url_problem
from deadpixel.enrich.geo import builtin_data_source
from deadpixel.hooks import registry
from deadpixel.hooks.guard import Guard
from deadpixel.hooks.notify import url_format
from deadpixel.store import audit, notices
from deadpixel.store.api_tokens import TokenError, create_token, list_tokens, revoke_token
from deadpixel.store.roles import ROLE_NAMES, RoleError, parse_role
from deadpixel.track.client_ip import ClientIPResolver
from deadpixel.web.forms import read_form
from deadpixel.web.session import Session

Render = Callable[..., Response]
AUDIT_SHOWN = 50  # the latest rows on the page; `deadpixel audit --limit` lists more


def configuration(settings: Settings) -> list[tuple[str, str, str]]:
    """(what, value, the setting that changes it)."""
    retention = f"{settings.retention_days} days" if settings.retention_days else "kept for ever"
    return [
        ("Tracking domain (base URL)", settings.base_url, "DEADPIXEL_BASE_URL"),
        ("IP addresses stored", settings.ip_mode, "DEADPIXEL_IP_MODE (full, truncate, none)"),
        ("Raw detail of opens and clicks", retention, "DEADPIXEL_RETENTION_DAYS"),
        ("This is me (own opens)", ", ".join(map(str, settings.self_ips)) or "none", "DEADPIXEL_SELF_IPS"),
        ("Stored opens per message a minute", str(settings.open_cap or "no cap"), "DEADPIXEL_OPEN_CAP"),
        (
            "Webhook retries",
            f"{settings.webhook_max_attempts} attempts, first retry after {settings.webhook_backoff:g} s",
            "DEADPIXEL_WEBHOOK_MAX_ATTEMPTS, DEADPIXEL_WEBHOOK_BACKOFF",
        ),
        (
            "Webhook receivers",
            "public addresses, and " + ", ".join(settings.webhook_allow)
            if settings.webhook_allow
            else "public addresses only",
            "DEADPIXEL_WEBHOOK_ALLOW",
        ),
        *notify_rows(settings),
    ]


def masked_url(url: str) -> str:
    """A notify URL as the page may show it: scheme, host and port only. Its path and query are often the
    secret itself (an ntfy topic, a Slack or Discord webhook, a Telegram bot token, a Matrix access token)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    hidden = "/…" if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{host}{port}{hidden}"


def notify_rows(settings: Settings) -> list[tuple[str, str, str]]:
    """The read-notice settings (the dashboard's own values, further down, win over them)."""
    url = settings.notify_url
    fmt = settings.notify_format
    if url and fmt == "auto":
        fmt = f"auto: {url_format(url, fmt)[1]}"
    clicks = "every human click too" if settings.notify_clicks else "first reads only"
    return [
        ("Read notices by email", settings.notify_email or "none", "DEADPIXEL_NOTIFY_EMAIL"),
        ("Read notices to a URL", masked_url(url) if url else "none", "DEADPIXEL_NOTIFY_URL"),
        ("Notice URL format", fmt, f"DEADPIXEL_NOTIFY_FORMAT ({', '.join(NOTIFY_FORMATS)})"),
        ("Notices of clicks", clicks, "DEADPIXEL_NOTIFY_CLICKS"),
    ]


def geo_data(settings: Settings) -> dict[str, Any]:
    """The built-in country and network data (date, packages, licences) and the user's own database."""
    source = builtin_data_source()
    own = str(settings.geoip_database) if settings.geoip_database else None
    return {"date": source["date"], "parts": source["parts"], "own": own}


class SettingsPages:
    def __init__(self, reader: Engine, writer: Engine, settings: Settings, render: Render) -> None:
        self.reader = reader
        self.writer = writer
        self.settings = settings
        self.render = render
        self.client_ip = ClientIPResolver.from_settings(settings)

    async def _run(self, engine: Engine, work: Callable[[Connection], Any]) -> Any:
        def run() -> Any:
            with engine.begin() as conn:
                return work(conn)

        return await asyncio.to_thread(run)

    async def page(self, request: Request, session: Session, status: int = 200, **shown: Any) -> Response:
        def gather(conn: Connection) -> dict[str, Any]:
            return {
                "webhooks": registry.list_webhooks(conn),
                "deliveries": registry.recent_deliveries(conn),
                "tokens": list_tokens(conn),
                "stored_targets": notices.targets(conn),
                "audit": audit.recent(conn, AUDIT_SHOWN),
            }

        data = await self._run(self.reader, gather)
        data["notify"] = self._notify_view(data.pop("stored_targets"))
        peer = request.client.host if request.client else None
        return self.render(
            "settings.html", status, session=session, configuration=configuration(self.settings),
            geo=geo_data(self.settings),
            your_address=self.client_ip.resolve(peer, request.scope["headers"]), shown=shown,
            roles=ROLE_NAMES, **data,
        )  # fmt: skip

    async def show(self, request: Request, session: Session) -> Response:
        return await self.page(request, session)

    async def add_webhook(self, request: Request, session: Session) -> Response:
        form = await read_form(request)
        url, events = str(form.get("url") or ""), [str(e) for e in form.getlist("events")]
        guard = Guard.allowing(*self.settings.webhook_allow)
        try:  # the name is looked up (in a thread) before the write transaction begins
            url = await asyncio.to_thread(registry.check_url, url, guard)

            def add(conn: Connection) -> Any:
                added = registry.add_webhook(conn, url, events, guard)
                audit.record(conn, session.user, "webhook.add", url)
                return added

            made, secret = await self._run(self.writer, add)
        except registry.WebhookError as exc:
            return await self.page(request, session, 400, webhook_error=str(exc), url=url)
        return await self.page(request, session, new_webhook=made, webhook_secret=secret)

    async def remove_webhook(self, request: Request, session: Session) -> Response:
        webhook_id = _number(request.path_params["id"])
        try:

            def remove(conn: Connection) -> None:
                removed = registry.remove_webhook(conn, webhook_id)
                audit.record(conn, session.user, "webhook.remove", f"{webhook_id} {removed.url}")

            await self._run(self.writer, remove)
        except registry.WebhookError as exc:
            return await self.page(request, session, 404, webhook_error=str(exc))
        return await self.page(request, session, removed_webhook=webhook_id)

    def _notify_view(self, stored: dict[str, str]) -> dict[str, Any]:
        """What the read-notice form shows: the dashboard's values, the settings' as placeholders."""
        return {
            "email": stored.get("email"), "url": stored.get("url"),
            "format": stored.get("format") or self.settings.notify_format, "formats": NOTIFY_FORMATS,
            "env_email": self.settings.notify_email,
            "env_url": masked_url(self.settings.notify_url) if self.settings.notify_url else None,
        }  # fmt: skip

    async def save_notices(self, request: Request, session: Session) -> Response:
        form = await read_form(request)
        values = {name: str(form.get(name) or "").strip() for name in notices.SETTING_NAMES}
        problem = None
        if values["email"] and (why := email_address_problem(values["email"])):
            problem = f"Email {why}"
        elif values["url"] and (why := notify_url_problem(values["url"])):
            problem = f"URL {why}"
        elif values["format"] not in NOTIFY_FORMATS:
            problem = f"Format must be one of {', '.join(NOTIFY_FORMATS)}"
        if problem:
            return await self.page(request, session, 400, notify_error=problem)
        if values["format"] == self.settings.notify_format:
            values["format"] = ""  # the setting's own value: keep following it

        def save(conn: Connection) -> None:
            notices.save_targets(conn, values)
            audit.record(
                conn, session.user, "settings.notices", ", ".join(f"{k}={v}" for k, v in values.items())
            )

        await self._run(self.writer, save)
        return await self.page(request, session, notify_saved=True)

    async def create_token(self, request: Request, session: Session) -> Response:
        form = await read_form(request)
        name = str(form.get("name") or "").strip()

        def make(conn: Connection) -> Any:
            role = parse_role(str(form.get("role") or "viewer"))
            made = create_token(conn, name, role)
            audit.record(conn, session.user, "token.create", f"{name} ({role.label})")
            return made

        try:
            made, secret = await self._run(self.writer, make)
        except (TokenError, RoleError) as exc:
            return await self.page(request, session, 400, token_error=str(exc), name=name)
        return await self.page(request, session, new_token=made, token_secret=secret)

    async def revoke_token(self, request: Request, session: Session) -> Response:
        token_id = _number(request.path_params["id"])

        def revoke(conn: Connection) -> Any:
            found = next((t for t in list_tokens(conn) if t.id == token_id), None)
            if found is None:
                raise TokenError(f"no token with id {token_id}")
            revoked = revoke_token(conn, found.name)  # by its unique name: another token may be named "3"
            audit.record(conn, session.user, "token.revoke", found.name)
            return revoked

        try:
            revoked = await self._run(self.writer, revoke)
        except TokenError as exc:
            return await self.page(request, session, 404, token_error=str(exc))
        return await self.page(request, session, revoked_token=revoked)


def _number(raw: str) -> int:
    """A row id from the path; anything else is an id no row has."""
    return int(raw) if raw.isdigit() and len(raw) < 10 else -1
