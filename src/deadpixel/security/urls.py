"""Which link URLs a click redirect can carry, and the ``Location`` value it sends for them.

Composing (``mail.compose``) rewrites a link only if the click endpoint (``track.click``) will later redirect
to it; a tracked link that answers 404 is worse than an untracked one. Both sides ask this module, which
imports nothing of theirs, so the two decisions cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote, urlsplit, urlunsplit

__all__ = ["MAX_LOCATION", "hidden_target", "location", "redirectable"]

# The longest Location value the click endpoint sends. Browsers and proxies accept far longer headers, but a
# link this long in a mail is a mistake or an abuse, and the whole response head must fit common limits.
MAX_LOCATION = 8192

# Printable ASCII that may stand in a Location header as it is; everything else is percent-encoded.
_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"<>\\^`{|}')
# Characters a browser refuses in a host name: it would show an error page instead of following the link.
_BAD_HOST = frozenset(' \t<>^|\\"%`{}[]')


def location(url: str) -> bytes | None:
    """The URL as an ASCII header value (IDNA host, UTF-8 percent-encoding), or None if unusable.

    Unusable: not http(s), no host (``http://``, ``https:///x``), a host with characters browsers refuse or
    that IDNA cannot encode, a port that is not a number, or longer than MAX_LOCATION once encoded.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a port that is not a number in range)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    if any(c in _BAD_HOST for c in parts.hostname):
        return None
    if url.isascii() and all(c in _SAFE for c in url):
        return url.encode("ascii") if len(url) <= MAX_LOCATION else None
    netloc = parts.netloc
    if not netloc.isascii():
        userinfo, at, hostport = netloc.rpartition("@")
        host, port = parts.hostname, ""
        if not hostport.startswith("[") and ":" in hostport:
            port = hostport[hostport.rindex(":") :]
        try:
            ascii_host = host.encode("idna").decode("ascii")
        except UnicodeError:
            return None
        netloc = userinfo + at + ascii_host + port
    rest = urlunsplit(("", "", parts.path, parts.query, parts.fragment))
    value = f"{parts.scheme}://{quote(netloc, safe=_SAFE)}{quote(rest, safe=_SAFE)}"
    if len(value) > MAX_LOCATION:
        return None
    return value.encode("ascii")


def redirectable(url: str) -> bool:
    """Whether the click endpoint would redirect to this URL (so composing may track it)."""
    return location(url) is not None


def hidden_target(urls: Sequence[str]) -> str | None:
    """Where a message's hidden link redirects: the home page of the site its first redirectable link is on.

    A scanner must see a real destination (an error page would tell it the link is a trap), and the site's
    home page is one that does nothing when fetched, unlike a confirmation or one-time link."""
    for url in urls:
        if location(url) is not None:
            parts = urlsplit(url)
            return urlunsplit((parts.scheme.lower(), parts.netloc, "/", "", ""))
    return None
