"""The message as sent, made safe to show, with each tracked link's clicks laid over it.

The kept HTML is the author's (or a template's first rendering): it may hold scripts, forms, remote images
and links that act on a recipient (an unsubscribe link). It is rebuilt here from a parser's events keeping
only inert markup: no scripts, frames, forms, event handlers, ``<base>`` or ``<meta>``; no URL at all (no
``href``, and no ``src`` but inline ``data:`` images), so showing it fetches nothing and no link works. The
dashboard then puts it in an ``<iframe sandbox srcdoc>``: no scripts, an opaque origin, and the dashboard's
own CSP. Links are numbered as ``mail.compose`` numbered them when the message was sent (the same scan,
the same links left alone), so badge N counts the clicks on link N. See
docs/decisions/2026-12-06-click-map-rendering.md.
"""

from __future__ import annotations

import html as markup
import re
import threading
import time
from dataclasses import dataclass
from html.parser import HTMLParser

from sqlalchemy import Connection

from deadpixel.mail.compose import rewrite_links
from deadpixel.reports.clickmap import CopyClicks, click_map, latest_click

MARK = "#deadpixel-link-"
_DROPPED_WITH_CONTENT = frozenset({"script", "iframe", "object", "embed", "template", "noscript", "frameset"})
_DROPPED = frozenset({"meta", "base", "link", "form", "input", "button", "select", "textarea", "frame"})
_URL_ATTRIBUTES = frozenset(
    {"href", "src", "srcset", "action", "formaction", "background", "poster", "ping", "lowsrc", "dynsrc",
     "longdesc", "cite", "data", "codebase", "xlink:href", "manifest", "usemap"}
)  # fmt: skip
_VOID = frozenset({"area", "br", "col", "hr", "img", "source", "track", "wbr"})
BADGE_STYLE = (
    "<style>.dp-badge{display:inline-block;margin:0 .25em;padding:0 .4em;border-radius:.6em;"
    "background:#b00020;color:#fff;font:bold 12px/1.5 system-ui,sans-serif;text-decoration:none;"
    "vertical-align:middle}.dp-badge.none{background:#777}</style>"
)


@dataclass(frozen=True, slots=True)
class MapLink:
    number: int  # as stored: link 0 is the first tracked link
    url: str
    human_clicks: int
    clickers: int
    share: float  # of the copy's clickers


@dataclass(frozen=True, slots=True)
class ClickMap:
    variant: str
    document: str  # for the iframe's srcdoc
    links: list[MapLink]
    clickers: int


def render(copy: CopyClicks, own_prefix: str) -> ClickMap:
    """The copy's HTML, numbered and made inert, with a badge at each tracked link."""
    urls: list[str] = []

    def number(url: str) -> str | None:
        if url.startswith(own_prefix):  # our own pages (unsubscribe) were not tracked: no number
            return None
        urls.append(url)
        return f"{MARK}{len(urls) - 1}"

    numbered, _ = rewrite_links(copy.html, number)
    links = []
    for i, url in enumerate(urls):
        counted = copy.links.get(i)
        human, clickers = (counted.human_clicks, counted.clickers) if counted else (0, 0)
        share = clickers / copy.clickers if copy.clickers else 0.0
        links.append(MapLink(i, url, human, clickers, share))
    inert = _Inert({link.number: link for link in links})
    inert.feed(numbered)
    inert.close()
    return ClickMap(copy.variant, BADGE_STYLE + "".join(inert.out), links, copy.clickers)


class _Inert(HTMLParser):
    def __init__(self, links: dict[int, MapLink]) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._links = links
        self._skipping: list[str] = []
        self._raw = False  # inside <style>

    def handle_decl(self, decl: str) -> None:
        if decl.lower().startswith("doctype") and not self._skipping:
            self.out.append("<!DOCTYPE html>")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs, close=False)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs, close=True)

    def _start(self, tag: str, attrs: list[tuple[str, str | None]], close: bool) -> None:
        if self._skipping:
            if tag == self._skipping[-1] and not close:
                self._skipping.append(tag)
            return
        if tag in _DROPPED_WITH_CONTENT:
            if not close and tag not in _VOID:
                self._skipping.append(tag)
            return
        if tag in _DROPPED:
            return
        kept = []
        badge = None
        for name, value in attrs:
            if name.startswith("on") or (name in _URL_ATTRIBUTES and not _inline_image(tag, name, value)):
                if tag == "a" and name == "href" and value and value.startswith(MARK):
                    badge = self._links.get(int(value[len(MARK) :]))
                continue
            if name in ("http-equiv", "target", "formtarget", "is"):
                continue
            if name == "style" and value:
                value = _no_fetching(value)
            kept.append(f' {name}="{markup.escape(value or "")}"' if value is not None else f" {name}")
        if badge is not None:
            kept.append(f' data-link="{badge.number}"')
        self.out.append(f"<{tag}{''.join(kept)}{' /' if close else ''}>")
        self._raw = tag == "style" and not close
        if badge is not None:
            self.out.append(_badge(badge))

    def handle_endtag(self, tag: str) -> None:
        if self._skipping:
            if tag == self._skipping[-1]:
                self._skipping.pop()
            return
        if tag in _DROPPED_WITH_CONTENT or tag in _DROPPED:
            return
        self.out.append(f"</{tag}>")
        self._raw = False

    def handle_data(self, data: str) -> None:
        if self._skipping:
            return
        if self._raw:  # a style sheet: raw text, which must neither fetch nor close its element early
            self.out.append(_no_fetching(data).replace("<", ""))
        else:
            self.out.append(markup.escape(data, quote=False))


_FETCHING = re.compile(
    r"(?:url|image-set|image|expression|src)\s*\((?:[^()]|\([^()]*\))*\)?|@import[^;]*;?", re.IGNORECASE
)


def _no_fetching(css: str) -> str:
    """CSS that loads nothing: each ``url(...)``, ``@import`` and the like is taken out, argument and all."""
    return _FETCHING.sub("none", css)


def _inline_image(tag: str, name: str, value: str | None) -> bool:
    return tag == "img" and name == "src" and bool(value) and str(value).lower().startswith("data:image/")


def _badge(link: MapLink) -> str:
    label = f"#{link.number + 1} · {link.human_clicks} click{'' if link.human_clicks == 1 else 's'}"
    if link.clickers:
        label += f" · {link.share:.0%} of clickers"
    css = "dp-badge" if link.human_clicks else "dp-badge none"
    return f'<span class="{css}" data-clicks="{link.human_clicks}">{markup.escape(label)}</span>'


class ClickMaps:
    """Rendered click maps by campaign, kept while no click has been recorded since (the newest click's id
    is read from the end of an index) and for at most ``ttl`` seconds, so a verdict rewritten by
    ``deadpixel reclassify`` shows within that time. Counting a busy campaign's clicks takes tens of
    milliseconds; a page reloaded without new clicks pays for it once."""

    def __init__(self, own_prefix: str, ttl: float = 60.0, size: int = 64) -> None:
        self._own = own_prefix
        self._ttl = ttl
        self._size = size
        self._kept: dict[str, tuple[int, float, list[ClickMap]]] = {}
        self._lock = threading.Lock()

    def get(self, conn: Connection, campaign: str) -> list[ClickMap]:
        latest = latest_click(conn)
        now = time.monotonic()
        with self._lock:
            found = self._kept.get(campaign)
        if found is not None and found[0] == latest and now - found[1] < self._ttl:
            return found[2]
        maps = [render(copy, self._own) for copy in click_map(conn, campaign)]
        with self._lock:
            if len(self._kept) >= self._size:
                self._kept.clear()
            self._kept[campaign] = (latest, now, maps)
        return maps
