"""Compose tracked mail: pixel, click links and a text part, without disturbing the author's HTML.

Mail HTML is fragile (Outlook conditional comments, entity-laden attributes, hand-tuned whitespace), so
nothing here re-serialises a document. The standard library's tokenizer finds the exact source span of each
start tag and of ``</body>``; only those spans are replaced and every other byte stays where it was.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy as email_policy
from email.headerregistry import Address, BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.utils import make_msgid
from html import escape as _escape
from html import unescape as _unescape
from html.entities import html5 as _HTML5_ENTITIES
from html.parser import HTMLParser
from types import MappingProxyType
from typing import NotRequired, TypedDict

from deadpixel.mail.addresses import local_part_problem
from deadpixel.security.urls import redirectable

__all__ = [
    "Composed", "compose", "html_to_text", "inject_pixel", "link_targets", "rewrite_links", "track_html"
]  # fmt: skip

Rewrite = Callable[[str], str | None]

# The pixel sits in a zero-size float that clips it, so it takes no room: a 1 px block after the last element
# showed as a hairline under coloured footers, and any in-flow box at the end of the body stops the last
# paragraph's margin from collapsing with the body's. A float leaves both alone, and its image still loads
# (it is clipped, not display:none). Where a client drops the wrapper's CSS, the image shows as the 1 px
# block it was before. docs/sending.md has the measurements.
PIXEL_TEMPLATE = (
    '<div style="float:left;width:0;height:0;max-height:0;overflow:hidden;line-height:0;font-size:0">'
    '<img src="{src}" width="1" height="1" alt="" border="0"'
    ' style="border:0;width:1px;height:1px;display:block"></div>'
)

# The hidden link ("honeypot"): no person can see, reach or click it, so whatever follows it is a machine. It
# has no text to click, sits in a box that is not displayed (``mso-hide`` for Outlook's Word engine, which
# ignores ``display``; ``!important`` so that no stylesheet of the author's shows it), takes no pointer
# events, is out of the tab order and out of the accessibility tree. Link scanners follow every href in the
# source, this one with the others. tests/test_hidden_link_browser.py checks this in Chromium.
HIDDEN_LINK_TEMPLATE = (
    '<div aria-hidden="true" style="display:none!important;max-height:0;max-width:0;overflow:hidden;'
    'mso-hide:all;font-size:0;line-height:0;opacity:0"><a href="{href}" tabindex="-1" aria-hidden="true"'
    ' style="display:none!important;pointer-events:none;font-size:0;color:transparent;text-decoration:none">'
    "</a></div>"
)

# Merge tags of mail services that fill the URL in after we hand the message over. A token minted now would
# redirect to the unexpanded template, so such links are never rewritten. Case-insensitive; includes the
# percent-encoded spellings an editor may have produced.
PLACEHOLDER_MARKERS = ("{{", "}}", "{%", "%}", "%%", "*|", "|*", "%7b%7b", "%7b%25", "*%7c", "%7c*")


class _CachingHeaderRegistry(HeaderRegistry):
    """The standard registry builds a new header class for every header set; a campaign sets millions."""

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        cls = self._classes.get(key)
        if cls is None:
            cls = self._classes[key] = super().__getitem__(name)
        return cls


# Lines end in CRLF as SMTP wants; non-ASCII headers become RFC 2047 encoded words.
MAIL_POLICY = email_policy.SMTP.clone(header_factory=_CachingHeaderRegistry())

# Headers compose() owns: letting a caller override them would break the MIME structure or the addressing.
_RESERVED_HEADERS = frozenset(
    {"from", "to", "cc", "subject", "mime-version", "content-type", "content-transfer-encoding"}
)
_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


# --- attribute tokenizing -----------------------------------------------------------------------------------

_WS = " \t\n\r\f"
_C0_AND_SPACE = "".join(map(chr, range(0x21)))  # what the URL parser strips from both ends
_CHARREF = re.compile(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)")


@dataclass(frozen=True, slots=True)
class _Attr:
    name: str  # lower-cased
    start: int  # where the whitespace before the name begins (so removing [start, end) leaves the tag tidy)
    end: int
    value_start: int  # raw value span, quotes included; equal to end when the attribute has no value
    value_end: int
    raw_value: str  # without quotes, entities still encoded
    quote: str  # '"', "'" or "" for unquoted or missing values


def _tokenize_attrs(tag: str) -> list[_Attr]:
    """Attributes of one start tag with their offsets, following the HTML tokenizer's states.

    html.parser gives names and values but no offsets, and decodes values with html.unescape, which differs
    from browsers inside attributes (``&copy=2`` stays literal there); both matter when we splice a URL.
    """
    n = len(tag)
    i = 1
    while i < n and tag[i] not in _WS and tag[i] not in "/>":
        i += 1
    attrs: list[_Attr] = []
    while i < n:
        ws_start = i
        while i < n and (tag[i] in _WS or tag[i] == "/"):
            i += 1
        if i >= n or tag[i] == ">":
            break
        name_start = i
        i += 1  # the first character may be '=' (a parse error browsers accept as part of the name)
        while i < n and tag[i] not in _WS and tag[i] not in "/>=":
            i += 1
        name = tag[name_start:i].lower()
        j = i
        while j < n and tag[j] in _WS:
            j += 1
        if j >= n or tag[j] != "=":
            attrs.append(_Attr(name, ws_start, i, i, i, "", ""))
            continue
        j += 1
        while j < n and tag[j] in _WS:
            j += 1
        if j < n and tag[j] in "\"'":
            quote = tag[j]
            close = tag.find(quote, j + 1)
            close = n if close < 0 else close + 1
            raw = tag[j + 1 : close - 1]
            attrs.append(_Attr(name, ws_start, close, j, close, raw, quote))
            i = close
        else:
            k = j
            while k < n and tag[k] not in _WS and tag[k] != ">":
                k += 1
            attrs.append(_Attr(name, ws_start, k, j, k, tag[j:k], ""))
            i = k
    return attrs


def _decode_charref(match: re.Match[str]) -> str:
    body = match.group(1)
    if body[0] == "#":
        return _unescape(match.group(0))
    if body in _HTML5_ENTITIES:
        return _HTML5_ENTITIES[body]
    for cut in range(len(body) - 1, 1, -1):
        if body[:cut] in _HTML5_ENTITIES:
            following = body[cut]
            if following == "=" or (following.isascii() and following.isalnum()):
                return match.group(0)  # browsers leave "&copy=2" alone inside attribute values
            return _HTML5_ENTITIES[body[:cut]] + body[cut:]
    return match.group(0)


def decode_attribute(raw: str) -> str:
    """An attribute value as a browser decodes it (character references, attribute-value rules)."""
    return _CHARREF.sub(_decode_charref, raw) if "&" in raw else raw


# A campaign asks about the same few links for every recipient: answer each once.
_redirectable = functools.lru_cache(maxsize=4096)(redirectable)


def _trackable(value: str) -> str | None:
    """The URL a click on this href opens, if it is one we may rewrite."""
    url = value.strip(_C0_AND_SPACE)
    if "\t" in url or "\n" in url or "\r" in url:
        url = url.replace("\t", "").replace("\n", "").replace("\r", "")  # as the URL parser does
    lower = url.lower()
    if not lower.startswith(("http://", "https://")):
        return None
    if any(marker in lower for marker in PLACEHOLDER_MARKERS):
        return None
    if not _redirectable(url):
        return None  # no host, or too long: the click endpoint would answer 404, so keep the link as written
    return url


# --- scanning -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _LinkTag:
    start: int  # offset of the tag in the document
    text: str  # the start tag exactly as written


@dataclass(frozen=True, slots=True)
class _Scan:
    links: tuple[_LinkTag, ...]
    body_end: int | None
    html_end: int | None
    text: str | None
    body_start: int | None = None


@dataclass(slots=True)
class _Found:
    links: list[_LinkTag] = field(default_factory=list)
    body_end: int | None = None
    html_end: int | None = None
    body_start: int | None = None  # just after the first <body ...> tag


class _Scanner(HTMLParser):
    """One pass over the document collecting what the transformations need."""

    def __init__(self, source: str, base: int, scan: _Found, text: _TextBuilder | None, conditional: bool):
        super().__init__(convert_charrefs=True)
        self._base = base
        self._scan = scan
        self._text = text
        self._conditional = conditional
        starts = [0]
        nl = source.find("\n")
        while nl >= 0:
            starts.append(nl + 1)
            nl = source.find("\n", nl + 1)
        self._line_starts = starts

    def _offset(self) -> int:
        line, col = self.getpos()
        return self._base + self._line_starts[line - 1] + col

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if (tag == "a" or (self._conditional and tag.startswith("v:"))) and any(
            name in ("href", "data-notrack") for name, _ in attrs
        ):
            raw = self.get_starttag_text() or ""
            self._scan.links.append(_LinkTag(self._offset(), raw))
        if tag == "body" and not self._conditional and self._scan.body_start is None:
            self._scan.body_start = self._offset() + len(self.get_starttag_text() or "")
        if self._text is not None:
            self._text.start(tag, attrs, self.get_starttag_text() or "")

    def handle_endtag(self, tag: str) -> None:
        if not self._conditional:
            if tag == "body":
                self._scan.body_end = self._offset()
            elif tag == "html":
                self._scan.html_end = self._offset()
        if self._text is not None:
            self._text.end(tag)

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.data(data)

    def handle_comment(self, data: str) -> None:
        if self._conditional:
            return
        inner = _conditional_body(data)
        if inner is not None:
            offset, content = inner
            sub = _Scanner(content, self._offset() + 4 + offset, self._scan, None, conditional=True)
            sub.feed(content)
            sub.close()


_COND_OPEN = re.compile(r"\s*\[if\b[^\]]*\]>", re.IGNORECASE)
_COND_CLOSE = re.compile(r"<!\[endif\]\s*$", re.IGNORECASE)


def _conditional_body(comment: str) -> tuple[int, str] | None:
    """The HTML inside ``<!--[if mso]> ... <![endif]-->``, which Outlook renders, with its offset."""
    opened = _COND_OPEN.match(comment)
    if opened is None:
        return None
    closed = _COND_CLOSE.search(comment, opened.end())
    if closed is None:
        return None
    return opened.end(), comment[opened.end() : closed.start()]


_CACHED_SIZE = 256 * 1024


def _scan(source: str, *, want_text: bool) -> _Scan:
    """Tokenizing dominates composing; a campaign whose HTML is the same for every recipient pays it once."""
    if len(source) <= _CACHED_SIZE:
        return _cached_scan(source, want_text)
    return _scan_uncached(source, want_text)


@functools.lru_cache(maxsize=16)
def _cached_scan(source: str, want_text: bool) -> _Scan:
    return _scan_uncached(source, want_text)


def _scan_uncached(source: str, want_text: bool) -> _Scan:
    found = _Found()
    text = _TextBuilder() if want_text else None
    scanner = _Scanner(source, 0, found, text, conditional=False)
    scanner.feed(source)
    scanner.close()
    text_result = text.result() if text else None
    return _Scan(tuple(found.links), found.body_end, found.html_end, text_result, found.body_start)


def _transform(
    source: str, scan: _Scan, pixel_url: str | None, rewrite: Rewrite | None, hidden_url: str | None = None
) -> tuple[str, list[str]]:
    edits: list[tuple[int, int, str]] = []
    links: list[str] = []
    if rewrite is not None:
        for tag in scan.links:
            _edit_link(tag, rewrite, edits, links)
    end = _end_of_body(source, scan)
    if hidden_url is not None and links:  # a message without tracked links has no clicks to judge
        at = scan.body_start if scan.body_start is not None else end
        edits.append((at, at, HIDDEN_LINK_TEMPLATE.format(href=_escape(hidden_url, quote=True))))
    if pixel_url is not None:
        edits.append((end, end, PIXEL_TEMPLATE.format(src=_escape(pixel_url, quote=True))))
    if not edits:
        return source, links
    edits.sort(key=lambda edit: edit[0])
    pieces: list[str] = []
    pos = 0
    for start, stop, replacement in edits:
        pieces.append(source[pos:start])
        pieces.append(replacement)
        pos = stop
    pieces.append(source[pos:])
    return "".join(pieces), links


def _end_of_body(source: str, scan: _Scan) -> int:
    """Where the pixel goes: before ``</body>``, else before ``</html>`` (content after it would still land in
    the body, but keep it inside), else at the end."""
    if scan.body_end is not None:
        return scan.body_end
    if scan.html_end is not None:
        return scan.html_end
    return len(source)


def _edit_link(tag: _LinkTag, rewrite: Rewrite, edits: list[tuple[int, int, str]], links: list[str]) -> None:
    attrs = _tokenize_attrs(tag.text)
    notrack = [attr for attr in attrs if attr.name == "data-notrack"]
    if notrack:
        for attr in notrack:
            edits.append((tag.start + attr.start, tag.start + attr.end, ""))
        return
    href = next((attr for attr in attrs if attr.name == "href"), None)
    if href is None or href.value_start == href.end:
        return
    url = _trackable(decode_attribute(href.raw_value))
    if url is None:
        return
    new = rewrite(url)
    if new is None:
        return
    links.append(url)
    if new == url:
        return
    quote = href.quote or '"'
    edits.append((tag.start + href.value_start, tag.start + href.value_end, quote + _escape(new) + quote))


# --- public transformations ---------------------------------------------------------------------------------


def inject_pixel(html: str, pixel_url: str) -> str:
    """Put the 1x1 image last in the body, where it loads only once the whole message has been rendered."""
    return _transform(html, _scan(html, want_text=False), pixel_url, None)[0]


def rewrite_links(html: str, rewrite: Rewrite) -> tuple[str, list[str]]:
    """Replace each trackable ``<a href>`` by ``rewrite(url)``; return the HTML and those URLs in order.

    ``rewrite`` sees the URL a browser would open (entities decoded, surrounding whitespace dropped) and may
    return None to leave a link alone. Links inside Outlook conditional comments count, because Outlook shows
    them; plain comments are never rendered and are left as they are.
    """
    return _transform(html, _scan(html, want_text=False), None, rewrite)


def track_html(
    html: str, pixel_url: str | None, rewrite: Rewrite | None, hidden_url: str | None = None
) -> tuple[str, list[str]]:
    """Pixel and link rewriting in one pass (either may be None), as compose() does to its HTML; with
    ``hidden_url``, a message with tracked links also gets the hidden link (``HIDDEN_LINK_TEMPLATE``) first
    in its body.

    The scan is cached, so a document copied for several recipients is parsed once.
    """
    return _transform(html, _scan(html, want_text=False), pixel_url, rewrite, hidden_url)


def link_targets(html: str) -> list[tuple[str, bool]]:
    """Every ``<a href>`` as a browser reads it, and whether compose() would track it; links marked
    ``data-notrack`` are left out (their author chose). Decided by the same rules the rewriting uses, so a
    preview's warnings agree with what sending does."""
    found: list[tuple[str, bool]] = []
    for tag in _scan(html, want_text=True).links:  # the scan compose() cached when it made the text part
        attrs = _tokenize_attrs(tag.text)
        if any(attr.name == "data-notrack" for attr in attrs):
            continue
        href = next((attr for attr in attrs if attr.name == "href"), None)
        if href is None:
            continue
        value = decode_attribute(href.raw_value)
        found.append((value, _trackable(value) is not None))
    return found


def html_to_text(html: str) -> str:
    """A plain-text alternative that reads well in a text-only client."""
    text = _scan(html, want_text=True).text
    return text or ""


# --- text rendering -----------------------------------------------------------------------------------------

_SKIP = frozenset({"head", "style", "script", "title", "template", "xml"})
_PARAGRAPH = frozenset(
    {"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "dl", "table", "hr", "figure"}
)
_LINE = frozenset(
    {
        "div", "tr", "td", "th", "li", "dt", "dd", "section", "article", "header", "footer", "main", "nav",
        "aside", "center", "address", "caption", "form", "fieldset", "tbody", "thead", "tfoot", "body",
    }
)  # fmt: skip
# Invisible characters newsletters use to pad preview text; they only add noise to a text part.
_INVISIBLE = re.compile("[\u200b\u200c\u200d\u2060\ufeff\u034f\u00ad]")


class _TextBuilder:
    """Renders tokens as text: blocks become line breaks, runs of whitespace one space, links 'text (url)'."""

    def __init__(self) -> None:
        self._out: list[str] = []
        self._breaks = 0  # newlines owed before the next visible text
        self._space = False  # a space owed before the next visible text on the same line
        self._line_start = True
        self._skip: list[str] = []
        self._pre = 0
        self._lists: list[list[int]] = []  # per open list: [number of the next item] or [] for <ul>
        self._links: list[tuple[str, int]] = []
        self._marker = False  # a list marker was just written: the item's text belongs on its line

    def _break(self, count: int) -> None:
        if self._out and not self._marker:
            self._breaks = max(self._breaks, count)
        self._space = False

    def _emit(self, text: str) -> None:
        if self._breaks:
            self._out.append("\n" * self._breaks)
            self._breaks = 0
            self._line_start = True
        elif self._space and not self._line_start:
            self._out.append(" ")
        self._space = False
        self._marker = False
        self._out.append(text)
        self._line_start = text.endswith("\n")

    def start(self, tag: str, attrs: list[tuple[str, str | None]], raw: str) -> None:
        if tag == "body":
            self._skip.clear()
        if tag in _SKIP:
            self._skip.append(tag)
        if self._skip:
            return
        if tag in ("ul", "ol"):
            self._break(1 if self._lists else 2)  # a nested list continues its parent's
            self._lists.append([1] if tag == "ol" else [])
        elif tag in _PARAGRAPH:
            self._break(2)
            if tag == "pre":
                self._pre += 1
        elif tag in _LINE:
            self._break(1)
            if tag == "li":
                self._list_item()
        elif tag == "br":
            if self._out:
                self._breaks = min(self._breaks + 1, 2)
            self._space = False
        elif tag == "a":
            href = next((attr for attr in _tokenize_attrs(raw) if attr.name == "href"), None)
            self._links.append((decode_attribute(href.raw_value) if href else "", len(self._out)))
        elif tag == "img" and self._links:
            alt = next((value for name, value in attrs if name == "alt"), None)
            if alt and alt.strip():
                self.data(alt)

    def _list_item(self) -> None:
        counter = self._lists[-1] if self._lists else []
        if counter:
            marker = f"{counter[0]}. "
            counter[0] += 1
        else:
            marker = "- "
        self._emit("  " * max(len(self._lists) - 1, 0) + marker)
        self._line_start = True  # the marker's trailing space stands in for any leading space of the item
        self._marker = True

    def end(self, tag: str) -> None:
        if tag in _SKIP:
            if tag in self._skip:
                del self._skip[len(self._skip) - 1 - self._skip[::-1].index(tag) :]
            return
        if self._skip:
            return
        if tag in ("ul", "ol"):
            if self._lists:
                self._lists.pop()
            self._break(1 if self._lists else 2)
        elif tag in _PARAGRAPH:
            if tag == "pre":
                self._pre = max(self._pre - 1, 0)
            self._break(2)
        elif tag in _LINE:
            self._break(1)
        elif tag == "a" and self._links:
            self._end_link(*self._links.pop())

    def _end_link(self, href: str, first: int) -> None:
        url = href.strip()
        if not url or url.startswith("#") or url.lower().startswith("javascript:"):
            return
        shown = url[7:] if url.lower().startswith("mailto:") else url
        label = "".join(self._out[first:]).strip()
        if label.rstrip("/") == shown.rstrip("/") or label.rstrip("/") == url.rstrip("/"):
            return
        if label:
            self._space = True
            self._emit(f"({shown})")
        else:
            self._emit(shown)

    def data(self, data: str) -> None:
        if self._skip:
            return
        if self._pre:
            self._emit(_INVISIBLE.sub("", data.replace("\r\n", "\n")))
            return
        if _INVISIBLE.search(data):
            data = _INVISIBLE.sub("", data)
        words = data.split()
        if not words:
            if data and not self._line_start:
                self._space = True
            return
        if data[0].isspace() and not self._line_start:
            self._space = True
        self._emit(" ".join(words))
        self._space = data[-1].isspace()

    def result(self) -> str:
        text = "".join(self._out)
        lines = [line.rstrip() for line in text.split("\n")]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


# --- the message --------------------------------------------------------------------------------------------


class Letter(TypedDict):
    """What a message says, in compose()'s own words: whoever tracks it passes it through unchanged and adds
    only the pixel and the link rewriting."""

    sender: str
    to: Sequence[str]
    cc: NotRequired[Sequence[str]]
    subject: str
    html: str
    text: NotRequired[str | None]
    headers: NotRequired[Mapping[str, str]]


@dataclass
class Composed:
    """A message ready to send, and the URLs its tracked links stand for, in the order they were rewritten."""

    message: EmailMessage
    links: list[str]


def _address(value: str, header: str) -> Address:
    return _checked(_header(header, value), value, header)


def _checked(parsed: BaseHeader, value: str, header: str) -> Address:
    addresses: tuple[Address, ...] = getattr(parsed, "addresses", ())
    if len(addresses) != 1 or parsed.defects or not addresses[0].domain or not addresses[0].username:
        raise ValueError(f"{header}: not one valid address: {value!r}")
    address: Address = addresses[0]
    problem = local_part_problem(address.username)
    if problem:
        raise ValueError(f"{header}: {problem}: {value!r}")
    domain = address.domain
    if not domain.isascii():
        domain = domain.encode("idna").decode("ascii")
    return Address(display_name=address.display_name, username=address.username, domain=domain)


def _header(name: str, value: object) -> BaseHeader:
    header: BaseHeader = MAIL_POLICY.header_factory(name, value)
    return header


def _address_header(header: str, values: Sequence[str]) -> BaseHeader:
    """The checked header for these addresses, parsed once when it holds one ASCII-domain address."""
    if len(values) == 1:
        parsed = _header(header, values[0])
        address = _checked(parsed, values[0], header)
        if address.domain == parsed.addresses[0].domain:  # type: ignore[attr-defined]
            return parsed
        return _header(header, [address])
    return _header(header, [_address(value, header) for value in values])


@functools.lru_cache(maxsize=64)
def _sender_header(sender: str) -> tuple[BaseHeader, Address]:
    """A campaign sends thousands of messages from one sender: parse it once."""
    address = _address(sender, "From")
    return _header("From", [address]), address


@functools.cache
def _constant_header(name: str, value: str) -> BaseHeader:
    """Headers whose value never changes, parsed once; header objects are immutable, so sharing is safe."""
    return _header(name, value)


def compose(
    *,
    sender: str,
    to: Sequence[str],
    cc: Sequence[str] = (),
    subject: str,
    html: str,
    text: str | None = None,
    pixel_url: str | None,
    rewrite: Rewrite | None,
    headers: Mapping[str, str] = _NO_HEADERS,
    message_id_domain: str | None = None,
    hidden_url: str | None = None,
) -> Composed:
    """Build a multipart/alternative message; pixel_url=None and rewrite=None send the HTML untouched.

    The text part comes from the original HTML, so it carries the real URLs: a text-only reader sees where a
    link goes. Message-ID and Date may be given in ``headers`` (a resend after a crash can then reuse them).
    """
    if not to:
        raise ValueError("compose() needs at least one To address")
    from_header, from_address = _sender_header(sender)
    to_header = _address_header("To", to)
    cc_header = _address_header("Cc", cc) if cc else None
    for name in headers:
        if name.lower() in _RESERVED_HEADERS:
            raise ValueError(f"header {name!r} is set by compose() itself")

    tracked = pixel_url is not None or rewrite is not None
    scan = _scan(html, want_text=text is None) if tracked or text is None else None
    if scan is not None and text is None:
        text = scan.text or ""
    body, links = (
        _transform(html, scan, pixel_url, rewrite, hidden_url) if tracked and scan is not None else (html, [])
    )

    message = EmailMessage(policy=MAIL_POLICY)
    message["MIME-Version"] = _constant_header("MIME-Version", "1.0")
    message["From"] = from_header
    message["To"] = to_header
    if cc_header is not None:
        message["Cc"] = cc_header
    message["Subject"] = subject
    lowered = {name.lower() for name in headers}
    if "date" not in lowered:
        message["Date"] = datetime.now(UTC)
    if "message-id" not in lowered:
        message["Message-ID"] = make_msgid(domain=message_id_domain or from_address.domain)
    for name, value in headers.items():
        message[name] = value
    message.make_alternative()
    message.attach(_text_part(text or "", "plain"))
    message.attach(_text_part(body, "html"))
    return Composed(message=message, links=links)


_HIGH_BYTES = bytes(range(128, 256))


def _text_part(content: str, subtype: str) -> EmailMessage:
    """A UTF-8 text part that is 7-bit clean on the wire, so no relay without 8BITMIME can mangle it.

    Unlike set_content() this keeps the content as it was (no newline appended) and encodes quoted-printable
    with binascii, in C: the pure-Python encoder cost more than the rest of composing a newsletter.
    """
    content = content.replace("\r\n", "\n").replace("\r", "\n")  # MIME text has CRLF line breaks only
    data = content.encode("utf-8")
    if data.isascii() and max(map(len, content.split("\n"))) <= 998:
        cte, payload = "7bit", content
    elif (len(data) - len(data.translate(None, _HIGH_BYTES))) * 5 > len(data):
        cte, payload = "base64", base64.encodebytes(data).decode("ascii")  # mostly non-Latin text: smaller
    else:
        cte, payload = "quoted-printable", binascii.b2a_qp(data, istext=True).decode("ascii")
    part = EmailMessage(policy=MAIL_POLICY)
    part["Content-Type"] = _constant_header("Content-Type", f'text/{subtype}; charset="utf-8"')
    part["Content-Transfer-Encoding"] = _constant_header("Content-Transfer-Encoding", cte)
    part.set_payload(payload)
    return part
