"""A campaign message as one recipient will get it, and what to fix before sending it, without sending it.

Pure: no database, no SMTP, no signing keys. The row is merged by the campaign's own templates
(deadpixel.send.merge) and composed by deadpixel.mail.compose, so the HTML, the text part and the headers are
the ones a send would produce; only the pixel, click and unsubscribe URLs are placeholders. Their tokens are
``preview`` padded with ``x`` to a real token's length: ``w`` and ``x`` are outside the tokens' alphabet, so
the server treats them as forged (a pixel answers and records nothing, a click or unsubscribe link is a 404),
and the size shown is the size sent.

Warnings never stop anything: the page shows them and the sender decides. ``preview`` never raises,
whatever the HTML, the templates or the row hold (tests/test_preview.py checks that with hypothesis).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from html.parser import HTMLParser

from deadpixel.mail.addresses import BadAddress, parse_recipient
from deadpixel.mail.compose import Composed, Rewrite, compose, html_to_text, link_targets, track_html
from deadpixel.send.merge import Rendered, TemplateProblem, Templates, fields
from deadpixel.send.unsubscribe import plain_http_unsubscribe, unsubscribe_headers

__all__ = [
    "GMAIL_CLIP_BYTES",
    "MAX_HTML_BYTES",
    "MAX_SENDER",
    "MAX_SUBJECT",
    "MAX_TEXT_BYTES",
    "TEST_HEADER",
    "UNSUBSCRIBE_VARIABLE",
    "WARNING_CODES",
    "Content",
    "Notice",
    "Preview",
    "marked_subject",
    "preview",
]

# Gmail shows "[Message clipped]" and hides the rest, the pixel included, past about 102 KB of HTML.
GMAIL_CLIP_BYTES = 102 * 1024
GMAIL_NEAR_BYTES = 90 * 1024
# Bounds of what a preview takes, from the dashboard or the API: an HTML template five times Gmail's clipping
# size is already a mistake, and a subject is one header line.
MAX_HTML_BYTES = 512 * 1024
MAX_TEXT_BYTES = 256 * 1024
MAX_SUBJECT = 998
MAX_SENDER = 320
PIXEL_TOKEN_LENGTH = 32  # key id, message id and MAC in base32hex (deadpixel.security.tokens)
CLICK_TOKEN_LENGTH = 40  # the same and the link's number
UNSUBSCRIBE_VARIABLE = "unsubscribe_url"
# Every Notice.code, in the order the checks run (the API's document lists them).
WARNING_CODES = (
    "missing_field", "foreign_merge_tag", "template", "address", "untracked_link", "no_unsubscribe",
    "http_image", "gmail_clip", "unsubscribe_http",
)  # fmt: skip
_MAILCHIMP_TAG = re.compile(r"\*\|([A-Za-z0-9_:]+)\|\*")
_CSS_HTTP_URL = re.compile(r"url\(\s*['\"]?\s*(http://[^'\")\s]*)", re.IGNORECASE)
_UNSUBSCRIBE_WORDS = ("unsubscribe", "opt-out", "optout", "opt out")
_SCHEMES = {
    "mailto:": "an email link",
    "tel:": "a phone link",
    "sms:": "a text-message link",
    "javascript:": "a script (mail clients drop it)",
    "data:": "a data: URL",
}
_SHOWN = 5  # names or links listed in one warning


@dataclass(frozen=True, slots=True)
class Content:
    """What the sender wrote: templates (Jinja2) for the subject, the HTML and the optional text part."""

    sender: str
    subject: str
    html: str
    text: str | None = None


@dataclass(frozen=True, slots=True)
class Notice:
    """One warning: ``code`` for programs (stable), ``message`` for people."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Preview:
    subject: str
    html: str  # the HTML part as sent: merged, pixel and tracked links in (placeholder URLs)
    text: str  # the text part as sent: the merged text template, or derived from the HTML
    text_derived: bool  # True when the text part was made from the HTML
    headers: dict[str, str]  # From, To, Subject and the List-Unsubscribe pair
    html_bytes: int
    warnings: list[Notice] = field(default_factory=list)
    message: EmailMessage | None = None  # None when an address is unusable (see the warnings)


def _placeholder(length: int, label: str = "") -> str:
    return f"preview{label}".ljust(length, "x")


def marked_subject(subject: str) -> str:
    """A test copy's subject: marked, so nobody takes it for the campaign itself."""
    return f"[Test] {subject}"


TEST_HEADER = "X-Deadpixel-Test"


def preview(
    content: Content, row: Mapping[str, str], *, base_url: str, test_to: str | None = None
) -> Preview:
    """``row`` is one recipient's columns (``email`` among them), as the CSV gives them to the templates.

    ``test_to`` makes the test copy of that row for another address: the subject marked ``[Test]``, a
    ``X-Deadpixel-Test: yes`` header, no pixel and the links as written (a placeholder click URL would lead
    nowhere for whoever checks them), so there is nothing it could ever be counted by.
    """
    tracked = test_to is None
    warnings: list[Notice] = []
    unsubscribe_url = f"{base_url}/u/{_placeholder(PIXEL_TOKEN_LENGTH)}"
    values: dict[str, str] = {UNSUBSCRIBE_VARIABLE: unsubscribe_url, **row}
    _check_fields(content, values, warnings)
    _check_mailchimp(content, warnings)
    rendered = _render(content, values, warnings)
    headers = unsubscribe_headers(unsubscribe_url)
    if test_to is not None:
        rendered = Rendered(marked_subject(rendered.subject), rendered.html, rendered.text)
        headers[TEST_HEADER] = "yes"
    to = row.get("email", "") if test_to is None else test_to
    composed = _compose(content.sender, to, rendered, headers, base_url, tracked, warnings)
    if composed is not None:
        html, text = _parts(composed.message)
    else:
        html = _tracked(rendered.html, base_url) if tracked else rendered.html
        text = rendered.text if rendered.text is not None else html_to_text(rendered.html)
    size = len(html.encode("utf-8", "replace"))
    _check_links(rendered.html, base_url, UNSUBSCRIBE_VARIABLE in _used(content.html), warnings)
    _check_images(rendered.html, warnings)
    _check_size(size, warnings)
    https = plain_http_unsubscribe(base_url)
    if https:
        warnings.append(Notice("unsubscribe_http", https.removeprefix("Warning: ")))
    shown = {"From": content.sender, "To": to, "Subject": rendered.subject, **headers}
    return Preview(
        subject=rendered.subject, html=html, text=text, text_derived=rendered.text is None, headers=shown,
        html_bytes=size, warnings=warnings, message=composed.message if composed else None,
    )  # fmt: skip


def _used(source: str | None) -> frozenset[str]:
    if source is None:
        return frozenset()
    try:
        return fields(source)
    except TemplateProblem:
        return frozenset()  # reported once, by _render


def _check_fields(content: Content, values: Mapping[str, str], warnings: list[Notice]) -> None:
    used = _used(content.subject) | _used(content.html) | _used(content.text)
    missing = sorted(used - set(values))
    if missing:
        names = ", ".join(missing[:_SHOWN]) + (
            f" and {len(missing) - _SHOWN} more" if len(missing) > _SHOWN else ""
        )
        warnings.append(
            Notice(
                "missing_field",
                f"Merge fields not in the recipient list's columns: {names}. The send would stop on every row"
                " without them; add the columns or remove the fields.",
            )
        )


def _check_mailchimp(content: Content, warnings: list[Notice]) -> None:
    tags = sorted({m.group(1) for src in (content.subject, content.html, content.text or "") for m in
                   _MAILCHIMP_TAG.finditer(src)})  # fmt: skip
    if tags:
        shown = ", ".join(f"*|{tag}|*" for tag in tags[:_SHOWN])
        warnings.append(
            Notice(
                "foreign_merge_tag",
                f"Mailchimp merge tags are sent as written: {shown}. deadpixel fills {{{{ column }}}}"
                " from the list's columns, and {{ unsubscribe_url }} for *|UNSUB|*.",
            )
        )


# Compiling dominates a preview; a sender previews one campaign's templates for row after row.
_templates = functools.lru_cache(maxsize=8)(Templates)


def _render(content: Content, values: Mapping[str, str], warnings: list[Notice]) -> Rendered:
    """The merged subject and parts; a field the row lacks is shown as its tag, a template that cannot be
    used as written (with a warning): the preview still shows something."""
    filled = {name: f"{{{{ {name} }}}}" for name in _used(content.subject) | _used(content.html)}
    filled.update({name: f"{{{{ {name} }}}}" for name in _used(content.text)})
    filled.update(values)
    try:
        return _templates(content.subject, content.html, content.text).render(filled)
    except TemplateProblem as exc:
        warnings.append(Notice("template", f"The template cannot be used as written: {exc}"))
    return Rendered(" ".join(content.subject.split()), content.html, content.text)


def _compose(
    sender: str,
    to: str,
    rendered: Rendered,
    headers: dict[str, str],
    base_url: str,
    tracked: bool,
    warnings: list[Notice],
) -> Composed | None:
    try:
        recipient = parse_recipient(to)
    except BadAddress as exc:
        warnings.append(Notice("address", f"{to!r} cannot be sent to: {exc}"))
        return None
    try:
        return compose(
            sender=sender, to=[recipient.header], subject=rendered.subject, html=rendered.html,
            text=rendered.text, headers=headers,
            pixel_url=f"{base_url}/o/{_placeholder(PIXEL_TOKEN_LENGTH)}.gif" if tracked else None,
            rewrite=_rewriter(base_url) if tracked else None,
            hidden_url=f"{base_url}/c/{_placeholder(CLICK_TOKEN_LENGTH, 'h')}" if tracked else None,
        )  # fmt: skip
    except ValueError as exc:  # the From address, or a header from the row's data
        warnings.append(Notice("address", f"The message cannot be composed: {exc}"))
        return None


def _rewriter(base_url: str) -> Rewrite:
    """Placeholder click URLs, numbered as deadpixel.send.tracked numbers real ones; our own URLs (the
    unsubscribe page) are never wrapped, as there."""
    own = base_url + "/"
    minted = 0

    def rewrite(url: str) -> str | None:
        nonlocal minted
        if url.startswith(own):
            return None
        minted += 1
        return f"{base_url}/c/{_placeholder(CLICK_TOKEN_LENGTH, str(minted))}"

    return rewrite


def _tracked(html: str, base_url: str) -> str:
    pixel = f"{base_url}/o/{_placeholder(PIXEL_TOKEN_LENGTH)}.gif"
    return track_html(html, pixel, _rewriter(base_url))[0]


def _parts(message: EmailMessage) -> tuple[str, str]:
    html_part = message.get_body(("html",))
    text_part = message.get_body(("plain",))
    html = html_part.get_content() if isinstance(html_part, EmailMessage) else ""
    text = text_part.get_content() if isinstance(text_part, EmailMessage) else ""
    return str(html), str(text)


def _why_untracked(href: str) -> str:
    url = href.strip()
    lower = url.lower()
    for scheme, why in _SCHEMES.items():
        if lower.startswith(scheme):
            return why
    if not url:
        return "empty"
    if url.startswith("#"):
        return "a link inside the message"
    if "{{" in url or "*|" in url or "%7b%7b" in lower:
        return "still holds a merge tag"
    if not lower.startswith(("http://", "https://")):
        return (
            "relative or without a scheme: it goes nowhere in a mailbox"
            if "://" not in url
            else "unknown scheme"
        )
    return "malformed (no host, or too long)"


def _check_links(html: str, base_url: str, unsubscribe_field: bool, warnings: list[Notice]) -> None:
    targets = link_targets(html)
    untracked = [(href, _why_untracked(href)) for href, trackable in targets if not trackable]
    if untracked:
        listed = "; ".join(f"{href[:80] or '(empty)'}: {why}" for href, why in untracked[:_SHOWN])
        more = f" and {len(untracked) - _SHOWN} more" if len(untracked) > _SHOWN else ""
        warnings.append(
            Notice(
                "untracked_link",
                f"{len(untracked)} link(s) cannot be tracked and are sent as written: {listed}{more}.",
            )
        )
    own = f"{base_url}/u/"
    if not unsubscribe_field and not any(
        href.startswith(own) or any(word in href.lower() for word in _UNSUBSCRIBE_WORDS)
        for href, _ in targets
    ):
        warnings.append(
            Notice(
                "no_unsubscribe",
                'No unsubscribe link in the HTML: add <a href="{{ unsubscribe_url }}">Unsubscribe</a> to'
                " the footer. deadpixel adds the List-Unsubscribe and List-Unsubscribe-Post (one-click)"
                " headers to every campaign message either way, but readers and providers expect a visible"
                " link.",
            )
        )


class _Images(HTMLParser):
    """Image URLs served over plain HTTP: <img src/srcset>, background attributes, CSS url(...)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if not value:
                continue
            if (tag == "img" and name == "src") or name == "background":
                self._add(value)
            elif tag in ("img", "source") and name == "srcset":
                for candidate in value.split(","):
                    self._add(candidate.strip().split(" ")[0])
            elif name == "style":
                self.found += _CSS_HTTP_URL.findall(value)

    def handle_data(self, data: str) -> None:
        if self.lasttag == "style":
            self.found += _CSS_HTTP_URL.findall(data)

    def _add(self, url: str) -> None:
        if url.strip().lower().startswith("http://"):
            self.found.append(url.strip())


def _check_images(html: str, warnings: list[Notice]) -> None:
    images = _Images()
    images.feed(html)
    images.close()
    found = list(dict.fromkeys(images.found))
    if found:
        listed = ", ".join(url[:80] for url in found[:_SHOWN])
        warnings.append(
            Notice(
                "http_image",
                f"{len(found)} image(s) over plain http:// ({listed}): many clients block them or mark the"
                " message as not secure; serve them over https://.",
            )
        )


def _check_size(size: int, warnings: list[Notice]) -> None:
    kib = size / 1024
    if size > GMAIL_CLIP_BYTES:
        warnings.append(
            Notice(
                "gmail_clip",
                f"The HTML is {kib:.0f} KiB: Gmail clips messages over 102 KiB, hiding the rest of the"
                " message and the tracking pixel with it (opens go uncounted).",
            )
        )
    elif size >= GMAIL_NEAR_BYTES:
        warnings.append(
            Notice(
                "gmail_clip",
                f"The HTML is {kib:.0f} KiB, near Gmail's 102 KiB limit: past it, Gmail clips the message"
                " and the tracking pixel with it.",
            )
        )
