"""Composing tracked mail: the pixel, link rewriting, the text part and the MIME message."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from email import policy
from email.parser import BytesParser
from email.utils import parsedate_to_datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deadpixel.mail.compose import PIXEL_TEMPLATE, compose, html_to_text, inject_pixel, rewrite_links

SAMPLES = Path(__file__).parent / "mail_samples"
PIXEL_URL = "https://t.example/o/abc.gif"
PIXEL = PIXEL_TEMPLATE.format(src=PIXEL_URL)


class Recorder:
    """A rewrite function that numbers the links it is asked about."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, url: str) -> str:
        self.seen.append(url)
        return f"https://trk.example/c/{len(self.seen) - 1}"


def parse(raw: bytes):  # type: ignore[no-untyped-def]
    return BytesParser(policy=policy.default).parsebytes(raw)


# --- rewrite_links ----------------------------------------------------------------------------------------

REWRITE_CASES = [
    ("double quotes", '<a href="https://a.example/x">x</a>', '<a href="https://trk.example/c/0">x</a>'),
    ("single quotes", "<a href='http://a.example/'>x</a>", "<a href='https://trk.example/c/0'>x</a>"),
    ("unquoted", "<a href=https://a.example/x?q=1>x</a>", '<a href="https://trk.example/c/0">x</a>'),
    ("unquoted, slash last", "<a href=https://a.example/>x</a>", '<a href="https://trk.example/c/0">x</a>'),
    (
        "upper case",
        '<A CLASS=btn HREF="HTTPS://A.example/X">x</A>',
        '<A CLASS=btn HREF="https://trk.example/c/0">x</A>',
    ),
    (
        "attributes over lines",
        '<a\n  class="x"\n  href = "https://a.example/"\n  target=_blank\n>x</a>',
        '<a\n  class="x"\n  href = "https://trk.example/c/0"\n  target=_blank\n>x</a>',
    ),
    ("xhtml empty tag", '<a href="https://a.example/" />', '<a href="https://trk.example/c/0" />'),
    (
        "first href wins",
        '<a href="https://a.example/" href="https://b.example/">x</a>',
        '<a href="https://trk.example/c/0" href="https://b.example/">x</a>',
    ),
    (
        "text and entities around untouched",
        '<p>&nbsp;Tom&amp;Jerry &copy; <a href="https://a.example/">&rarr; go</a>&#8203;</p>',
        '<p>&nbsp;Tom&amp;Jerry &copy; <a href="https://trk.example/c/0">&rarr; go</a>&#8203;</p>',
    ),
]


@pytest.mark.parametrize(
    ("source", "expected"), [c[1:] for c in REWRITE_CASES], ids=[c[0] for c in REWRITE_CASES]
)
def test_rewrite_links_replaces_only_the_href_value(source: str, expected: str) -> None:
    rewrite = Recorder()
    out, links = rewrite_links(source, rewrite)
    assert out == expected
    assert links == rewrite.seen
    assert len(links) == 1


@pytest.mark.parametrize(
    ("href", "url"),
    [
        ('"https://a.example/?x=1&amp;y=2"', "https://a.example/?x=1&y=2"),
        ('"https://a.example/?x=1&#38;y=2&#x26;z=3"', "https://a.example/?x=1&y=2&z=3"),
        # inside attributes browsers leave a legacy entity name alone when '=' or a letter follows
        ('"https://a.example/?a=1&copy=2&notify=3"', "https://a.example/?a=1&copy=2&notify=3"),
        ("https://a.example/?a=1&amp;copy=2", "https://a.example/?a=1&copy=2"),
        ('"https://a.example/caf&eacute;/&quot;q&quot;"', 'https://a.example/café/"q"'),
        ('"  https://a.example/padded \n"', "https://a.example/padded"),
        ('"https://a.exa\tmple/"', "https://a.example/"),
        ("'HTTP://A.EXAMPLE/'", "HTTP://A.EXAMPLE/"),
    ],
)
def test_rewrite_sees_the_url_a_browser_would_open(href: str, url: str) -> None:
    rewrite = Recorder()
    rewrite_links(f"<a href={href}>x</a>", rewrite)
    assert rewrite.seen == [url]


def test_replacement_is_attribute_escaped() -> None:
    out, _ = rewrite_links("<a href='https://a.example/'>x</a>", lambda url: "https://t/c?a=1&b=\"2\"&c='3'")
    assert out == "<a href='https://t/c?a=1&amp;b=&quot;2&quot;&amp;c=&#x27;3&#x27;'>x</a>"


LEFT_ALONE = [
    "mailto:someone@example.com?subject=Hi%20there",
    "tel:+351210000000",
    "#top",
    "",
    "/relative/path",
    "page.html",
    "//example.com/protocol-relative",
    "ftp://files.example.com/",
    "javascript:void(0)",
    "{{unsubscribe}}",
    "{{ unsubscribe_url }}",
    "%%unsubscribe%%",
    "*|UNSUB|*",
    "https://example.com/unsub?id={{subscriber_id}}",
    "https://example.com/unsub?id=*|UNIQID|*",
    "https://example.com/u/%%user_id%%",
    "https://example.com/u/%7B%7Bid%7D%7D",
    "https://example.com/u/{% raw %}x{% endraw %}",
]


@pytest.mark.parametrize("href", LEFT_ALONE)
def test_non_http_links_and_placeholders_are_left_alone(href: str) -> None:
    source = f"<p><a href=\"{href}\">x</a> <a href='{href}'>y</a></p>"
    rewrite = Recorder()
    assert rewrite_links(source, rewrite) == (source, [])
    assert rewrite.seen == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('<a data-notrack href="https://a.example/">x</a>', '<a href="https://a.example/">x</a>'),
        ('<a href="https://a.example/" data-notrack>x</a>', '<a href="https://a.example/">x</a>'),
        ("<a href=https://a.example/ data-notrack=''>x</a>", "<a href=https://a.example/>x</a>"),
        (
            '<a href="https://a.example/"\n   DATA-NOTRACK="yes" class=c>x</a>',
            '<a href="https://a.example/" class=c>x</a>',
        ),
        ('<a data-notrack href="mailto:a@b.example">x</a>', '<a href="mailto:a@b.example">x</a>'),
        ("<a data-notrack>x</a>", "<a>x</a>"),
    ],
)
def test_data_notrack_links_are_left_alone_and_unmarked(source: str, expected: str) -> None:
    rewrite = Recorder()
    assert rewrite_links(source, rewrite) == (expected, [])
    assert rewrite.seen == []


@pytest.mark.parametrize(
    "source",
    [
        '<!-- <a href="https://a.example/">old link</a> -->',
        '<style>a { color: red } /* <a href="https://a.example/"> */</style>',
        "<script>document.write('<a href=\"https://a.example/\">x</a>')</script>",
        '<link rel="stylesheet" href="https://a.example/s.css"><img src="https://a.example/i.png">',
        '<area href="https://a.example/" shape=rect><base href="https://a.example/">',
        # VML outside Outlook's conditional comments is rendered by nobody
        '<v:roundrect href="https://a.example/"></v:roundrect>',
        '<a name="https://a.example/">anchor</a><a title="https://a.example/">no href</a>',
    ],
)
def test_links_no_client_follows_are_left_alone(source: str) -> None:
    rewrite = Recorder()
    assert rewrite_links(source, rewrite) == (source, [])


def test_links_inside_outlook_conditional_comments_are_rewritten() -> None:
    source = (
        "<!--[if mso]>\n"
        '<v:roundrect xmlns:v="urn:schemas-microsoft-com:vml" href="https://a.example/?b=1&amp;c=2">'
        "<center>Go</center></v:roundrect>\n"
        "<a href='https://b.example/'>b</a>\n"
        "<![endif]-->\n"
        '<!--[if !mso]><!-- --><a href="https://c.example/">c</a><!--<![endif]-->\n'
        "<!--[if gte mso 9]><xml><o:OfficeDocumentSettings/></xml><![endif]-->"
        '<!-- a plain comment: <a href="https://d.example/">d</a> -->'
    )
    rewrite = Recorder()
    out, links = rewrite_links(source, rewrite)
    assert links == ["https://a.example/?b=1&c=2", "https://b.example/", "https://c.example/"]
    assert out == (
        "<!--[if mso]>\n"
        '<v:roundrect xmlns:v="urn:schemas-microsoft-com:vml" href="https://trk.example/c/0">'
        "<center>Go</center></v:roundrect>\n"
        "<a href='https://trk.example/c/1'>b</a>\n"
        "<![endif]-->\n"
        '<!--[if !mso]><!-- --><a href="https://trk.example/c/2">c</a><!--<![endif]-->\n'
        "<!--[if gte mso 9]><xml><o:OfficeDocumentSettings/></xml><![endif]-->"
        '<!-- a plain comment: <a href="https://d.example/">d</a> -->'
    )


def test_rewrite_returning_none_leaves_the_link() -> None:
    source = '<a href="https://a.example/">a</a><a href="https://b.example/">b</a>'
    out, links = rewrite_links(source, lambda url: None if "a.example" in url else "https://t/1")
    assert out == '<a href="https://a.example/">a</a><a href="https://t/1">b</a>'
    assert links == ["https://b.example/"]


# --- inject_pixel -----------------------------------------------------------------------------------------

PIXEL_CASES = [
    ("body", "<html><body><p>x</p></body></html>", "<html><body><p>x</p>{P}</body></html>"),
    (
        "upper case body",
        "<HTML><BODY>\n<p>x</p>\n</BODY >\n</HTML>\n",
        "<HTML><BODY>\n<p>x</p>\n{P}</BODY >\n</HTML>\n",
    ),
    ("fragment", "<p>Hello</p>\n", "<p>Hello</p>\n{P}"),
    ("empty", "", "{P}"),
    ("html without body end", "<html><p>x</p></html>", "<html><p>x</p>{P}</html>"),
    (
        "body end in comments and scripts",
        "<body>x<!-- </body> --><!--[if mso]></body><![endif]--><script>'</body>'</script></body>",
        "<body>x<!-- </body> --><!--[if mso]></body><![endif]--><script>'</body>'</script>{P}</body>",
    ),
    ("last body end", "<body>a</body>b</body>", "<body>a</body>b{P}</body>"),
    ("text after body", "<body>a</body>\n<!-- trailer -->\n", "<body>a{P}</body>\n<!-- trailer -->\n"),
]


@pytest.mark.parametrize(
    ("source", "expected"), [c[1:] for c in PIXEL_CASES], ids=[c[0] for c in PIXEL_CASES]
)
def test_pixel_goes_last_in_the_body(source: str, expected: str) -> None:
    assert inject_pixel(source, PIXEL_URL) == expected.replace("{P}", PIXEL)


def test_pixel_url_is_attribute_escaped() -> None:
    out = inject_pixel("<p>x</p>", 'https://t.example/o.gif?a=1&b="2"')
    assert 'src="https://t.example/o.gif?a=1&amp;b=&quot;2&quot;"' in out
    assert out.count("<img") == 1


# --- links the click endpoint cannot follow ----------------------------------------------------------------


@pytest.mark.parametrize(
    "href",
    [
        "http://",
        "https://",
        "HTTP://",
        " http:// ",
        "http:///x",
        "https:///",
        "http://a:port/",
        "http://a b/",
    ],
)
def test_placeholder_and_broken_links_are_left_as_written(href: str) -> None:
    """``href="http://"`` is a common placeholder: tracking it would give a link that answers 404."""
    recorder = Recorder()
    source = f'<p><a href="{href}">soon</a> <a href="https://a.example/">ok</a></p>'
    out, links = rewrite_links(source, recorder)
    assert recorder.seen == links == ["https://a.example/"]
    assert out == source.replace("https://a.example/", "https://trk.example/c/0")


def test_templates_keep_their_placeholder_links() -> None:
    source = (Path(__file__).parent / "data" / "templates" / "list-digest-padded-body.html").read_text()
    recorder = Recorder()
    out, links = rewrite_links(source, recorder)
    assert links == ["https://news.example/1", "https://news.example/2"]
    assert '<a href="http://">(link to come)</a>' in out


# --- the sample newsletter keeps every byte -----------------------------------------------------------------


def test_sample_newsletter_round_trips_byte_for_byte() -> None:
    source = (SAMPLES / "newsletter.html").read_text(encoding="utf-8")
    encoded: dict[str, str] = {}

    def rewrite(url: str) -> str:
        token = f"https://t.example/c/{len(encoded)}"
        encoded[token] = url
        return token

    out, links = rewrite_links(inject_pixel(source, PIXEL_URL), rewrite)
    assert out.count(PIXEL) == 1
    assert out.index(PIXEL) + len(PIXEL) == out.rindex("</body>")
    assert len(links) == 32
    assert "https://www.example.com/privacy" not in links  # data-notrack
    assert not any("{{" in link for link in links)
    assert links.count("https://blog.example.com/2026/05/story-3?utm_content=button-3") == 2  # VML + <a>
    # Put back each original spelling: everything else must be exactly as it was.
    body = source[source.index("<body") :]  # the <style> in the head mentions a link that is no tag
    originals = re.findall(r"""(?i)<(?:a|v:roundrect)\s[^>]*?href\s*=\s*("[^"]*"|'[^']*'|[^\s>]+)""", body)
    trackable = [raw for raw in originals if raw.strip("\"'").lower().startswith("http")]
    trackable = [raw for raw in trackable if "{{" not in raw and "privacy" not in raw]
    restored = out.replace(PIXEL, "")
    for index, raw in enumerate(trackable):
        restored = restored.replace(f'"https://t.example/c/{index}"', raw, 1)
        restored = restored.replace(f"'https://t.example/c/{index}'", raw, 1)
    assert restored == source.replace(" data-notrack", "")


# --- html_to_text -----------------------------------------------------------------------------------------

TEXT_CASES = [
    ("paragraphs", "<p>One</p><p>Two</p>", "One\n\nTwo"),
    ("line breaks", "a<br>b<br/><br>c", "a\nb\n\nc"),
    ("whitespace", "<div>  a \n\n  b\t c  </div>\n<div>d</div>", "a b c\nd"),
    ("inline tags", "<p>Hello <b>bold</b>, <i>world</i>!</p>", "Hello bold, world!"),
    ("entities", "<p>&amp; &lt;tag&gt; caf&eacute;&nbsp;&#8212; &#x263A;</p>", "& <tag> café — ☺"),
    (
        "link",
        '<p>Read <a href="https://a.example/?x=1&amp;y=2">the post</a>.</p>',
        "Read the post (https://a.example/?x=1&y=2).",
    ),
    ("link showing its url", '<a href="https://a.example/">https://a.example/</a>', "https://a.example/"),
    ("link with no text", '<a href="https://a.example/"></a>', "https://a.example/"),
    (
        "image link",
        '<a href="https://a.example/"><img src="l.png" alt="Logo"></a>',
        "Logo (https://a.example/)",
    ),
    ("mailto", '<a href="mailto:hi@a.example">Write</a>', "Write (hi@a.example)"),
    ("anchor", '<a href="#top">Back to top</a>', "Back to top"),
    ("placeholder", '<a href="{{unsubscribe}}">Unsubscribe</a>', "Unsubscribe ({{unsubscribe}})"),
    ("list", "<ul><li>one</li><li>two</li></ul>", "- one\n- two"),
    ("ordered list", "<ol><li>one<li>two</ol>", "1. one\n2. two"),
    (
        "nested list",
        "<p>x</p><ul><li>a<ol><li>b</li></ol></li><li>c</li></ul>after",
        "x\n\n- a\n  1. b\n- c\n\nafter",
    ),
    ("paragraph in item", "<ul><li><p>a</p><p>more</p></li><li><div>b</div></li></ul>", "- a\n\nmore\n\n- b"),
    ("pre", "<pre>  x = 1\n  y = 2</pre><p>after</p>", "  x = 1\n  y = 2\n\nafter"),
    (
        "head, style and script",
        "<html><head><title>T</title><style>p{color:red}</style></head><body><script>var x;</script>"
        "<p>Shown</p></body></html>",
        "Shown",
    ),
    ("comments", "<p>a<!-- hidden --><!--[if mso]>Outlook only<![endif]-->b</p>", "ab"),
    (
        "preview padding",
        "<div>Preview&zwnj;&nbsp;&zwnj;&nbsp;&#847;&shy;</div><p>Body</p>",
        "Preview\n\nBody",
    ),
    ("table", "<table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table>", "a\nb\nc"),
    ("headings", "<h1>Title</h1>text", "Title\n\ntext"),
    ("empty", "", ""),
]


@pytest.mark.parametrize(("source", "expected"), [c[1:] for c in TEXT_CASES], ids=[c[0] for c in TEXT_CASES])
def test_html_to_text(source: str, expected: str) -> None:
    assert html_to_text(source) == expected


def test_sample_newsletter_text_is_readable() -> None:
    text = html_to_text((SAMPLES / "newsletter.html").read_text(encoding="utf-8"))
    assert text.startswith("This week: field recordings, a new release & three events near you\n")
    assert "Story 1: what we heard at the river mouth (https://blog.example.com/2026/05/story-1?" in text
    assert "- Listening session, Lisbon (https://events.example.com/e/1001) — 12 June" in text
    assert "Write to us (hello@example.com?subject=Issue%2042)" in text
    for absent in ("mso-", "{ ", "<", "&nbsp;", "&amp;", "\u200c", "Read more</"):
        assert absent not in text
    assert "\n\n\n" not in text


# --- compose ----------------------------------------------------------------------------------------------


def _compose(**overrides):  # type: ignore[no-untyped-def]
    args = {
        "sender": "News <news@example.com>",
        "to": ["reader@example.org"],
        "subject": "Hello",
        "html": "<html><body><p>Hi <a href='https://a.example/'>there</a></p></body></html>",
        "pixel_url": PIXEL_URL,
        "rewrite": Recorder(),
    }
    args.update(overrides)
    return compose(**args)


def test_message_structure_and_headers() -> None:
    composed = _compose(cc=["Ann <ann@example.net>"], headers={"List-Unsubscribe": "<https://u.example/x>"})
    raw = bytes(composed.message)
    assert raw.isascii()  # 7-bit clean on the wire
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert head.count(b"MIME-Version: 1.0") == 1
    msg = parse(raw)
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in parts)
    assert all("MIME-Version" not in p for p in parts)
    assert str(msg["From"]) == "News <news@example.com>"
    assert str(msg["To"]) == "reader@example.org"
    assert str(msg["Cc"]) == "Ann <ann@example.net>"
    assert msg["List-Unsubscribe"] == "<https://u.example/x>"
    assert re.fullmatch(r"<[^@<>\s]+@example\.com>", msg["Message-ID"])
    assert parsedate_to_datetime(msg["Date"]).utcoffset() is not None
    html = parts[1].get_content()
    assert html.count(PIXEL) == 1
    assert "href='https://trk.example/c/0'" in html
    assert parts[0].get_content().rstrip("\n") == "Hi there (https://a.example/)"
    assert composed.links == ["https://a.example/"]


def test_utf8_names_and_subject_round_trip() -> None:
    subject = "Grüße aus Köln — 東京からのお知らせ 🎉 " + "long " * 20
    composed = _compose(
        sender="Jörg Müller <jorg@example.com>",
        to=['"Doe, Zoë" <zoe@example.org>', "Ελένη <eleni@example.gr>"],
        cc=["plain@example.net"],
        subject=subject,
    )
    raw = bytes(composed.message)
    assert raw.isascii()
    assert all(len(line) <= 78 for line in raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n"))
    msg = parse(raw)
    assert msg["Subject"] == subject
    assert msg["From"].addresses[0].display_name == "Jörg Müller"
    assert [(a.display_name, a.addr_spec) for a in msg["To"].addresses] == [
        ("Doe, Zoë", "zoe@example.org"),
        ("Ελένη", "eleni@example.gr"),
    ]
    assert msg["Cc"].addresses[0].addr_spec == "plain@example.net"


def test_idn_domains_are_punycoded() -> None:
    msg = parse(bytes(_compose(to=["Zoë <zoe@bücher.example>"]).message))
    assert msg["To"].addresses[0].addr_spec == "zoe@xn--bcher-kva.example"


@pytest.mark.parametrize(
    "bad",
    [
        {"to": []},
        {"to": ["not an address"]},
        {"to": ["a@example.org, b@example.org"]},
        {"to": ["Doe, John <j@example.org>"]},
        {"sender": "nobody"},
        {"cc": ["josé@example.org"]},
        {"subject": "two\nlines"},
        {"headers": {"X-Injected": "a\r\nBcc: victim@example.org"}},
        {"headers": {"Content-Type": "text/plain"}},
        {"headers": {"to": "x@example.org"}},
    ],
)
def test_invalid_input_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        _compose(**bad)


def test_message_id_and_date_can_be_given() -> None:
    msg = parse(
        bytes(
            _compose(
                headers={"Message-ID": "<fixed@example.com>", "Date": "Mon, 1 Jun 2026 10:00:00 +0000"}
            ).message
        )
    )
    assert msg.get_all("Message-ID") == ["<fixed@example.com>"]
    assert msg.get_all("Date") == ["Mon, 01 Jun 2026 10:00:00 +0000"]
    generated = parse(bytes(_compose(message_id_domain="mail.example.net").message))
    assert generated["Message-ID"].endswith("@mail.example.net>")


def test_text_part_comes_from_the_original_html_or_is_given() -> None:
    composed = _compose(html='<p>See <a href="https://a.example/">this</a></p>')
    text = parse(bytes(composed.message)).get_body(("plain",)).get_content()
    assert "https://a.example/" in text and "trk.example" not in text
    given_text = parse(bytes(_compose(text="Hand written.\n").message)).get_body(("plain",)).get_content()
    assert given_text.replace("\r\n", "\n") == "Hand written.\n"


@pytest.mark.parametrize(
    ("name", "html", "cte"),
    [
        ("ascii, short lines", "<p>Hello</p>\n<p>World &amp; co</p>\n", "7bit"),
        ("newsletter", (SAMPLES / "newsletter.html").read_text(encoding="utf-8"), "7bit"),
        ("long line", "<p>" + "word " * 300 + "</p>", "quoted-printable"),
        ("mostly non-latin", "<p>" + "東京からのお知らせです。" * 40 + "</p>", "base64"),
        ("no trailing newline, CR and trailing space", "<p>a</p>  \r\n<p>b</p>\t", "7bit"),
    ],
)
def test_untracked_html_goes_out_untouched(name: str, html: str, cte: str) -> None:
    composed = _compose(html=html, pixel_url=None, rewrite=None)
    assert composed.links == []
    msg = parse(bytes(composed.message))
    part = msg.get_body(("html",))
    assert part["Content-Transfer-Encoding"] == cte
    payload = part.get_payload(decode=True).decode("utf-8")
    # MIME text travels with CRLF line breaks; apart from that, every byte is the author's.
    assert payload.replace("\r\n", "\n") == html.replace("\r\n", "\n")


# --- property tests ---------------------------------------------------------------------------------------

TRACKER = "https://t.test/c/"


def encode_rewrite(url: str) -> str:
    return TRACKER + base64.urlsafe_b64encode(url.encode()).decode()


@dataclass(frozen=True)
class Frag:
    source: str
    expected: str  # the source without data-notrack attributes
    links: tuple[tuple[str, str], ...] = ()  # (url rewrite() must see, raw attribute value as written)
    visible: tuple[str, ...] = ()  # URLs the text part must show


def cat(frags: list[Frag]) -> Frag:
    return Frag(
        "".join(f.source for f in frags),
        "".join(f.expected for f in frags),
        tuple(link for f in frags for link in f.links),
        tuple(url for f in frags for url in f.visible),
    )


def same(text: str) -> Frag:
    return Frag(text, text)


TEXT_PIECES = [
    "Hello", "world", " ", "\n", "  ", "&amp;", "&nbsp;", "&eacute;", "&#233;", "&#x2014;", "a & b", "é",
    "日本", "3 > 2", "x=1;y=2", "&copy", "&notin;", "&zwnj;", "=", "'", '"',
]  # fmt: skip
texts = st.lists(st.sampled_from(TEXT_PIECES), max_size=6).map(lambda xs: same("".join(xs)))


@st.composite
def query_parts(draw: st.DrawFn) -> tuple[str, str, str]:
    """A URL, and its spellings for double-quoted, single-quoted and unquoted attributes."""
    scheme = draw(st.sampled_from(["http", "https", "HTTPS", "Http"]))
    host = draw(
        st.sampled_from(["example.com", "a.example.org", "xn--bcher-kva.example", "EXAMPLE.net:8080"])
    )
    segments = draw(
        st.lists(st.sampled_from(["p", "o'neil", "café", "a%20b", "x.html", "~u", "", "é"]), max_size=3)
    )
    url = f"{scheme}://{host}/" + "/".join(segments)
    spellings = [url, url, url]
    if draw(st.booleans()):
        pairs = draw(
            st.lists(
                st.tuples(
                    st.sampled_from(["a", "copy", "not", "amp", "utm_source", "id"]),
                    st.sampled_from(["1", "x y", "news", "", "é"]),
                ),
                min_size=1,
                max_size=4,
            )
        )
        url += "?"
        spellings = [s + "?" for s in spellings]
        for index, (key, value) in enumerate(pairs):
            if index:
                sep = draw(
                    st.sampled_from(["&amp;", "&#38;", "&#x26;", "&"])
                )  # raw '&' is safe before 'key='
                url += "&"
                spellings = [s + sep for s in spellings]
            url += f"{key}={value}"
            spellings = [s + f"{key}={value}" for s in spellings]
    if draw(st.booleans()):
        url += "#frag"
        spellings = [s + "#frag" for s in spellings]

    def spell(raw: str, quote: str) -> str:
        raw = raw.replace("é", draw(st.sampled_from(["é", "&eacute;", "&#233;", "&#xe9;"])))
        if quote == '"':
            raw = raw.replace('"', "&quot;")
        if quote == "'":
            raw = raw.replace("'", draw(st.sampled_from(["&#39;", "&#x27;", "&apos;"])))
        return raw

    return url, spell(spellings[0], '"'), spell(spellings[1], "'")


@st.composite
def links(draw: st.DrawFn, children: st.SearchStrategy[Frag]) -> Frag:
    url, double, single = draw(query_parts())
    unquoted_ok = not any(c in url for c in " \"'<>`")
    style = draw(
        st.sampled_from(
            ["double", "single", "unquoted", "padded"] if unquoted_ok else ["double", "single", "padded"]
        )
    )
    if style == "double":
        raw = f'"{double}"'
    elif style == "single":
        raw = f"'{single}'"
    elif style == "padded":
        raw = f'" {double}\n "'
    else:
        raw = double
    kind = draw(st.sampled_from(["tracked", "tracked", "tracked", "other", "notrack"]))
    if kind == "other":
        raw = (
            '"'
            + draw(
                st.sampled_from(
                    [
                        "mailto:a@example.com",
                        "tel:+1 555",
                        "#top",
                        "/rel",
                        "{{unsub}}",
                        "%%unsubscribe%%",
                        "*|UNSUB|*",
                        "https://x.example/?u={{id}}",
                    ]
                )
            )
            + '"'
        )
    name = draw(st.sampled_from(["a", "A"]))
    href = draw(st.sampled_from(["href", "HREF", "Href"]))
    sep = draw(st.sampled_from([" ", "  ", "\n\t"]))
    before = draw(st.sampled_from(["", ' class="btn"', " target=_blank", " style='color:red'"]))
    after = draw(st.sampled_from(["", ' title="t"', " id=x"]))
    eq = draw(st.sampled_from(["=", " = "]))
    notrack = ""
    if kind == "notrack":
        notrack = draw(st.sampled_from([" data-notrack", ' data-notrack=""', "\n DATA-NOTRACK='1'"]))
    at = draw(st.integers(0, 2))
    attrs = [before, f"{sep}{href}{eq}{raw}", after]
    expected = "".join(attrs)
    attrs.insert(at, notrack)
    inner = draw(children)
    end = f"</{name}>"
    frag = Frag(
        f"<{name}{''.join(attrs)}>" + inner.source + end, f"<{name}{expected}>" + inner.expected + end
    )
    if kind == "tracked":
        return Frag(frag.source, frag.expected, ((url, raw),), (url,))
    return frag


def elements(children: st.SearchStrategy[Frag]) -> st.SearchStrategy[Frag]:
    tags = st.sampled_from(["div", "p", "span", "td", "b", "font", "DIV", "Table", "center"])
    attrs = st.sampled_from(["", ' class="x"', " style='a:b'", " align=center", ' data-x="&amp;"'])

    def build(tag: str, attr: str, kids: list[Frag]) -> Frag:
        inner = cat(kids)
        return Frag(
            f"<{tag}{attr}>{inner.source}</{tag}>",
            f"<{tag}{attr}>{inner.expected}</{tag}>",
            inner.links,
            inner.visible,
        )

    return st.builds(build, tags, attrs, st.lists(children, max_size=4))


COMMENTS = [
    "<!-- plain -->",
    '<!-- <a href="https://commented.example/">old</a> </body> -->',
    "<!---->",
    "<!--[if !mso]><!-- -->",
    "<!--<![endif]-->",
    "<!--[if gte mso 9]><xml><o:AllowPNG/></xml><![endif]-->",
]
STYLES = [
    '<style>a{color:red} /* <a href="https://styled.example/"> </body> */</style>',
    "<STYLE>\np > a { x: y }\n</STYLE>",
]


def conditional(children: st.SearchStrategy[Frag]) -> st.SearchStrategy[Frag]:
    """Outlook's conditional comments: links there are rewritten (Outlook shows them), not in the text."""

    def build(kids: list[Frag]) -> Frag:
        inner = cat(kids)
        return Frag(
            f"<!--[if mso]>{inner.source}<![endif]-->",
            f"<!--[if mso]>{inner.expected}<![endif]-->",
            inner.links,
        )

    return st.builds(build, st.lists(children, max_size=3))


flat = st.one_of(texts, links(texts))
in_conditional = st.one_of(flat, elements(flat))
content = st.recursive(
    st.one_of(
        texts,
        st.sampled_from(COMMENTS).map(same),
        st.sampled_from(STYLES).map(same),
        conditional(in_conditional),
    ),
    lambda kids: st.one_of(elements(kids), links(texts)),
    max_leaves=25,
)


@st.composite
def documents(draw: st.DrawFn) -> tuple[Frag, int]:
    """A document and where the pixel belongs in it."""
    body = cat(draw(st.lists(content, max_size=8)))
    shape = draw(st.sampled_from(["fragment", "full", "no body end", "trailer"]))
    if shape == "fragment":
        return body, len(body.source)
    if shape == "no body end":
        head = same("<html><p>")
        return cat([head, body, same("</html>\n")]), len(head.source) + len(body.source)
    head = same(
        '<!DOCTYPE html>\n<html lang="en"><head><title>T</title>' + STYLES[0] + '</head>\n<BODY class="b">'
    )
    tail = "</body>\n</html>\n" if shape == "full" else "</BODY>\n<!-- trailer -->\n</html>"
    return cat([head, body, same(tail)]), len(head.source) + len(body.source)


class Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str | None] = []
        self.hrefs: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img":
            self.images.append(values.get("src"))
        if tag == "a":
            self.hrefs.append(values.get("href"))


UNREWRITE = re.compile(r"""(["'])""" + re.escape(TRACKER) + r"""([A-Za-z0-9_=-]+)\1""")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents())
@pytest.mark.slow
def test_property_pixel_and_links_round_trip(doc: tuple[Frag, int]) -> None:
    frag, pixel_at = doc
    assert inject_pixel(frag.source, PIXEL_URL) == frag.source[:pixel_at] + PIXEL + frag.source[pixel_at:]
    seen: list[str] = []

    def rewrite(url: str) -> str:
        seen.append(url)
        return encode_rewrite(url)

    out, rewritten = rewrite_links(inject_pixel(frag.source, PIXEL_URL), rewrite)
    assert seen == rewritten == [url for url, _ in frag.links]

    # The output parses, with exactly one pixel and every visible link either untouched or tracked.
    collector = Collector()
    collector.feed(out)
    collector.close()
    assert collector.images.count(PIXEL_URL) == 1
    assert out.count(PIXEL) == 1

    # Each tracked link leads back to its original URL...
    matches = list(UNREWRITE.finditer(out))
    assert [base64.urlsafe_b64decode(m.group(2)).decode() for m in matches] == [url for url, _ in frag.links]
    # ... and undoing the rewriting and the pixel gives back the original, byte for byte.
    restored = out.replace(PIXEL, "", 1)
    pieces, pos = [], 0
    for match, (_, raw) in zip(UNREWRITE.finditer(restored), frag.links, strict=True):
        pieces += [restored[pos : match.start()], raw]
        pos = match.end()
    assert "".join([*pieces, restored[pos:]]) == frag.expected


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents())
def test_property_text_part_shows_visible_links(doc: tuple[Frag, int]) -> None:
    frag, _ = doc
    text = html_to_text(frag.source)
    for url in frag.visible:
        assert url in text
    assert "commented.example" not in text and "styled.example" not in text
    assert "\n\n\n" not in text and text == text.strip()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents(), st.booleans())
def test_property_composed_message_parses_back(doc: tuple[Frag, int], tracked: bool) -> None:
    frag, _ = doc
    composed = compose(
        sender="Zoë <z@example.com>",
        to=["r@example.org"],
        subject="Grüße",
        html=frag.source,
        pixel_url=PIXEL_URL if tracked else None,
        rewrite=encode_rewrite if tracked else None,
    )
    msg = parse(bytes(composed.message))
    html = msg.get_body(("html",)).get_payload(decode=True).decode("utf-8").replace("\r\n", "\n")
    if tracked:
        assert html.count(PIXEL) == 1
        assert composed.links == [url for url, _ in frag.links]
    else:
        assert html == frag.source.replace("\r\n", "\n")
    text = msg.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert text == html_to_text(frag.source)
