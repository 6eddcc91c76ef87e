"""The campaign preview (deadpixel.send.preview): one row rendered as it would be sent, its warnings, and
that no HTML, template or row can make it raise."""

from __future__ import annotations

from email import message_from_bytes, policy

from hypothesis import given, settings
from hypothesis import strategies as st

from deadpixel.security.keys import SigningKeys
from deadpixel.security.tokens import TokenSigner
from deadpixel.send.preview import GMAIL_CLIP_BYTES, TEST_HEADER, Content, marked_subject, preview

BASE = "https://t.example.com"
ROW = {"email": "ann@example.org", "first_name": "Ann", "plan": "pro"}
FOOTER = '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'


def content(html: str, subject: str = "Hi {{ first_name }}", text: str | None = None) -> Content:
    return Content(sender="News <news@example.com>", subject=subject, html=html, text=text)


def codes(found: object) -> list[str]:
    return [w.code for w in found.warnings]  # type: ignore[attr-defined]


def test_a_row_is_merged_composed_and_tracked_with_placeholders() -> None:
    html = f'<html><body><p>Hello {{{{ first_name }}}}</p><a href="https://shop.example/x">Shop</a>{FOOTER}</body></html>'
    got = preview(content(html), ROW, base_url=BASE)
    assert got.subject == "Hi Ann"
    assert "Hello Ann" in got.html
    assert "https://shop.example/x" not in got.html  # rewritten, as a send rewrites it
    assert f"{BASE}/c/preview1" in got.html and f"{BASE}/o/preview" in got.html
    assert "Shop (https://shop.example/x)" in got.text and got.text_derived
    assert got.headers["List-Unsubscribe"].startswith(f"<{BASE}/u/preview")
    assert got.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert got.warnings == []
    assert got.message is not None and got.message["To"] == "ann@example.org"
    # the unsubscribe link is ours, never wrapped in a click redirect
    assert f'href="{BASE}/u/preview' in got.html


def test_placeholders_are_no_tokens_the_server_would_accept() -> None:
    got = preview(content(f'<a href="https://a.example/">a</a>{FOOTER}'), ROW, base_url=BASE)
    signer = TokenSigner(SigningKeys(1, {1: b"k" * 32}))
    pixel = got.html.split(f"{BASE}/o/")[1].split(".gif")[0]
    click = got.html.split(f"{BASE}/c/")[1].split('"')[0]
    assert len(pixel) == len(signer.pixel_token("0" * 16)) and len(click) == len(
        signer.click_token("0" * 16, 0)
    )
    assert signer.pixel_message_id(pixel) is None and signer.click_target(click) is None
    assert "x" in pixel and "x" in click  # outside base32hex: cannot decode whatever the key


def test_a_test_copy_is_marked_untracked_and_addressed_to_the_tester() -> None:
    html = f'<p>{{{{ first_name }}}}</p><a href="https://a.example/">a</a>{FOOTER}'
    got = preview(content(html), ROW, base_url=BASE, test_to="me@example.net")
    assert 'href="https://a.example/"' in got.html and "/o/" not in got.html and "/c/" not in got.html
    assert got.subject == marked_subject("Hi Ann") == "[Test] Hi Ann"
    assert got.message is not None and got.message["To"] == "me@example.net"
    assert got.message[TEST_HEADER] == "yes" and "<p>Ann</p>" in got.html


def test_missing_merge_field_is_named_and_shown_as_its_tag() -> None:
    got = preview(content(f"<p>Dear {{{{ last_name }}}}</p>{FOOTER}"), ROW, base_url=BASE)
    assert codes(got) == ["missing_field"]
    assert "last_name" in got.warnings[0].message
    assert "Dear {{ last_name }}" in got.html


def test_untrackable_links_each_say_why() -> None:
    html = (
        '<a href="mailto:a@b.example">m</a><a href="tel:+331">t</a><a href="javascript:alert(1)">j</a>'
        '<a href="/relative">r</a><a href="http://">bad</a><a href="https://ok.example/">ok</a>'
        f'<a href="https://skip.example/" data-notrack>n</a>{FOOTER}'
    )
    got = preview(content(html), ROW, base_url=BASE)
    assert codes(got) == ["untracked_link"]
    message = got.warnings[0].message
    assert message.startswith("5 link(s)")
    for why in ("an email link", "a phone link", "a script", "relative", "malformed"):
        assert why in message
    assert "ok.example" not in message and "skip.example" not in message


def test_no_unsubscribe_link_is_a_warning_and_the_header_is_still_there() -> None:
    got = preview(content("<p>Hello</p>"), ROW, base_url=BASE)
    assert codes(got) == ["no_unsubscribe"]
    assert "List-Unsubscribe" in got.warnings[0].message
    assert "List-Unsubscribe" in got.headers


def test_size_near_and_over_gmail_clipping() -> None:
    filler = "<p>" + "x" * 1000 + "</p>"
    near = preview(content(FOOTER + filler * 95), ROW, base_url=BASE)
    over = preview(content(FOOTER + filler * 110), ROW, base_url=BASE)
    small = preview(content(FOOTER + filler), ROW, base_url=BASE)
    assert codes(near) == ["gmail_clip"] and "near" in near.warnings[0].message
    assert codes(over) == ["gmail_clip"] and over.html_bytes > GMAIL_CLIP_BYTES
    assert codes(small) == []


def test_plain_http_images_and_backgrounds() -> None:
    html = (
        '<img src="http://img.example/a.png"><img src="https://img.example/b.png">'
        '<td background="http://img.example/bg.png"></td><div style="background:url(\'http://img.example/c.png\')">'
        f"</div>{FOOTER}"
    )
    got = preview(content(html), ROW, base_url=BASE)
    assert codes(got) == ["http_image"]
    assert got.warnings[0].message.startswith("3 image(s)")
    assert "b.png" not in got.warnings[0].message


def test_mailchimp_tags_broken_templates_and_bad_addresses_are_warnings() -> None:
    got = preview(content(f"<p>Hi *|FNAME|*</p>{FOOTER}"), ROW, base_url=BASE)
    assert codes(got) == ["foreign_merge_tag"] and "*|FNAME|*" in got.warnings[0].message
    broken = preview(content(f"<p>{{% if %}}</p>{FOOTER}"), ROW, base_url=BASE)
    assert "template" in codes(broken) and broken.html.startswith("<p>{% if %}")
    bad_row = preview(content(FOOTER), {**ROW, "email": "not an address"}, base_url=BASE)
    assert codes(bad_row) == ["address"] and bad_row.message is None
    assert "Unsubscribe" in bad_row.html


def test_plain_http_base_url_warns_about_one_click() -> None:
    got = preview(content(FOOTER), ROW, base_url="http://t.example.com")
    assert codes(got) == ["unsubscribe_http"]


def test_the_composed_message_parses_back_with_both_parts() -> None:
    got = preview(content(FOOTER, text="Plain {{ first_name }}"), ROW, base_url=BASE)
    assert got.message is not None
    parsed = message_from_bytes(bytes(got.message), policy=policy.default)
    assert parsed.get_body(("plain",)).get_content().strip() == "Plain Ann"  # type: ignore[union-attr]
    assert not got.text_derived


HTML_BITS = st.sampled_from(
    ["<a href=", '"', "'", ">", "</a>", "<img src=", "http://", "mailto:", "{{", "}}", "{%", "%}", "*|X|*",
     "<!--[if mso]>", "<![endif]-->", "<body>", "</body>", "<style>", "url(", "&amp;", "&#", "\x00", "\r\n",
     "unsubscribe", "<", "/", "=", " ", "é", "\ud800"]
)  # fmt: skip


@settings(max_examples=120, deadline=None)
@given(
    html=st.one_of(
        st.text(max_size=300), st.lists(st.one_of(HTML_BITS, st.text(max_size=5)), max_size=40).map("".join)
    ),
    subject=st.text(max_size=40),
    row=st.dictionaries(st.text(max_size=8), st.text(max_size=20), max_size=4),
    addressed=st.booleans(),
)
def test_preview_never_raises(html: str, subject: str, row: dict[str, str], addressed: bool) -> None:
    if addressed:  # half the rows reach compose with a usable address
        row = {**row, "email": "ann@example.org"}
    got = preview(Content("news@example.com", subject, html), row, base_url=BASE)
    assert isinstance(got.html, str) and isinstance(got.text, str)
    assert all(w.code and w.message for w in got.warnings)


def test_templates_nested_past_the_parsers_depth_are_a_warning_not_a_crash() -> None:
    for deep in ("{{" + "(" * 5000 + "}}", "{{ " + "a." * 3000 + "b }}", "{% if a %}" * 2000):
        got = preview(content(deep + FOOTER, subject=deep), ROW, base_url=BASE)
        problems = [w.message for w in got.warnings if w.code == "template"]
        assert len(problems) == 1 and "nested too deeply" in problems[0]
