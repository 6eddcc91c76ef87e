"""UTM tagging of tracked links: ``utm_source``, ``utm_medium=email`` and ``utm_campaign`` added to a URL.

A parameter the link already has is never replaced (the author's own ``utm_source`` wins), and nothing else
of the URL is touched: the existing query is kept byte for byte (its encoding, its order, repeated keys,
blank values), the host stays as written (an IDN host is not converted), and the fragment stays last. Only
http(s) URLs are tagged. See docs/decisions/2026-12-06-utm-defaults.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, quote

DEFAULT_SOURCE = "deadpixel"
MEDIUM = "email"


@dataclass(frozen=True, slots=True)
class Utm:
    """The tags for one campaign's links."""

    campaign: str
    source: str = DEFAULT_SOURCE
    medium: str = MEDIUM

    def pairs(self) -> tuple[tuple[str, str], ...]:
        return (("utm_source", self.source), ("utm_medium", self.medium), ("utm_campaign", self.campaign))

    def __call__(self, url: str) -> str:
        return add_utm(url, self)


def _present(query: str) -> set[str]:
    """The parameter names a query already has, decoded as a web server would read them."""
    return {name for name, _ in parse_qsl(query, keep_blank_values=True)} | {
        part.split("=", 1)[0] for part in query.split("&") if part
    }


def add_utm(url: str, utm: Utm) -> str:
    """``url`` with the UTM tags it lacks appended to its query; anything but http(s) comes back as is."""
    if not url.lower().startswith(("http://", "https://")):
        return url
    head, hash_, fragment = url.partition("#")
    base, _, query = head.partition("?")
    have = _present(query)
    added = [f"{name}={quote(value, safe='')}" for name, value in utm.pairs() if value and name not in have]
    if not added:
        return url
    joined = query + ("&" if query and not query.endswith("&") else "") + "&".join(added)
    return f"{base}?{joined}{hash_}{fragment}"
