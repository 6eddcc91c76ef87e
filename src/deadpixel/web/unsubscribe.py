"""``/u/<token>``: leaving a campaign's mailing list.

GET shows a small page with one button (a POST form): link scanners and prefetchers fetch every URL in a
message, so a GET must never unsubscribe anyone. POST unsubscribes, whether it comes from that button or
from a mail provider's one-click request (RFC 8058: ``List-Unsubscribe=One-Click`` in the body; any body is
accepted, the signed token is what counts). Unsubscribing twice is fine. A bad token gets a plain 404.
"""

from __future__ import annotations

import asyncio
import html
import logging

from sqlalchemy import Engine
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from deadpixel.security.tokens import TokenSigner
from deadpixel.store.suppressions import LinkOwner, link_owner, suppress, suppressed

log = logging.getLogger(__name__)

HEADERS = {"cache-control": "no-store", "x-robots-tag": "noindex", "referrer-policy": "no-referrer"}


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    content = (
        "<!doctype html>\n<html lang=en><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)}</title>\n"
        '<body style="font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem">\n'
        f"<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
    )
    return HTMLResponse(content, status_code=status, headers=HEADERS)


def masked(address: str) -> str:
    """Enough of the address to recognise it, not enough to harvest it from a forwarded link."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}{'*' * min(max(len(local) - 1, 2), 6)}@{domain}"


NOT_FOUND = "<p>This unsubscribe link is not valid. If you copied it, check that it is complete.</p>"


def unsubscribe_routes(engine: Engine, signer: TokenSigner) -> list[Route]:
    def owner(token: str) -> LinkOwner | None:
        unsubscribe_id = signer.unsubscribe_id(token)
        if unsubscribe_id is None:
            return None
        with engine.connect() as conn:
            return link_owner(conn, unsubscribe_id)

    def is_suppressed(address: str) -> bool:
        with engine.connect() as conn:
            return bool(suppressed(conn, [address]))

    def unsubscribe(found: LinkOwner, source: str) -> None:
        with engine.begin() as conn:
            if suppress(conn, found.address, source, found.campaign_id):
                log.info("unsubscribed from campaign %r (%s)", found.campaign, source)

    async def endpoint(request: Request) -> HTMLResponse:
        token = request.path_params["token"]
        found = await asyncio.to_thread(owner, token)
        if found is None:
            return _page("Link not valid", NOT_FOUND, 404)
        who = html.escape(masked(found.address))
        if request.method == "POST":
            body = (await request.body())[:1024]
            source = "one-click" if b"List-Unsubscribe=One-Click" in body else "unsubscribe-page"
            await asyncio.to_thread(unsubscribe, found, source)
            return _page("You are unsubscribed", f"<p>{who} will get no more mail from these campaigns.</p>")
        if await asyncio.to_thread(is_suppressed, found.address):
            return _page("Already unsubscribed", f"<p>{who} gets no more mail from these campaigns.</p>")
        form = (
            f"<p>Stop mail to {who}? You received it as part of "
            f"&ldquo;{html.escape(found.campaign)}&rdquo;.</p>\n"
            '<form method="post"><button type="submit" style="font-size:1.1rem;padding:.5rem 1rem">'
            "Unsubscribe</button></form>"
        )
        return _page("Unsubscribe", form)

    return [Route("/u/{token}", endpoint, methods=["GET", "POST"])]
