"""How the relay reads a submitted message and makes a copy: every part but the HTML one survives exactly."""

from __future__ import annotations

import base64
import binascii
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deadpixel.mail.compose import track_html
from deadpixel.relay.message import parse

PIXEL = "https://t.example/o/0123456789abcdefghijklmnopqrstuv.gif"


def _encode(text: str, charset: str, cte: str) -> bytes:
    data = text.replace("\n", "\r\n").encode(charset)
    if cte == "base64":
        return base64.encodebytes(data).replace(b"\n", b"\r\n").rstrip(b"\r\n")
    if cte == "quoted-printable":
        return binascii.b2a_qp(data, istext=True)
    return data


def _leaf(ctype: str, text: str, charset: str, cte: str, disposition: str = "") -> bytes:
    head = f"Content-Type: {ctype}; charset={charset}\r\nContent-Transfer-Encoding: {cte}\r\n{disposition}"
    return head.encode() + b"\r\n" + _encode(text, charset, cte)


def _multipart(subtype: str, boundary: str, parts: list[bytes]) -> bytes:
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + part + b"\r\n" for part in parts)
    return (
        f'Content-Type: multipart/{subtype};\r\n boundary="{boundary}"\r\n\r\n'.encode()
        + b"preamble\r\n"
        + body
        + b"--"
        + boundary.encode()
        + b"--\r\nepilogue\r\n"
    )


HEADERS = (
    b"From: a@example.com\r\nTo: b@example.org\r\nBcc: hidden@example.net,\r\n other@example.net\r\n"
    b"Subject: test\r\nX-Deadpixel-Campaign: c\r\nMessage-ID: <m@example.com>\r\nMIME-Version: 1.0\r\n"
)

texts = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\r") | st.sampled_from("\n\t"),
    max_size=300,
)


@st.composite
def messages(draw: Any) -> tuple[bytes, str]:
    html = "<html><body>" + draw(texts) + "</body></html>" + draw(st.sampled_from(["", "\n"]))
    charset, cte = draw(
        st.sampled_from([("utf-8", "quoted-printable"), ("utf-8", "base64"), ("utf-8", "8bit")])
    )
    html_part = _leaf("text/html", html, charset, cte)
    text_part = _leaf("text/plain", draw(texts) or "x", "utf-8", draw(st.sampled_from(["8bit", "base64"])))
    attachment = _leaf("text/html", "<p>attached</p>", "utf-8", "7bit", "Content-Disposition: attachment\r\n")
    shape = draw(st.sampled_from(["single", "alternative", "mixed", "related"]))
    if shape == "single":
        body = html_part
    elif shape == "alternative":
        body = _multipart("alternative", "alt", [text_part, html_part])
    elif shape == "mixed":
        body = _multipart(
            "mixed", "mix", [_multipart("alternative", "mix-alt", [text_part, html_part]), attachment]
        )
    else:
        related = _multipart("related", "rel", [html_part, _leaf("text/css", "p{}", "utf-8", "7bit")])
        body = _multipart("mixed", "mixed", [_multipart("alternative", "alt2", [text_part, related])])
    return HEADERS + body, html.replace("\n", "\r\n")


def _parts(raw: bytes) -> list[tuple[str, str | None, Any]]:
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return [
        (part.get_content_type(), part.get_content_disposition(), part.get_content())
        for part in message.walk()
        if not part.is_multipart()
    ]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages())
def test_a_copy_changes_the_html_part_only(case: tuple[bytes, str]) -> None:
    raw, html = case
    submitted = parse(raw)
    assert submitted.untracked is None and submitted.html == html
    tracked, _ = track_html(html, PIXEL, None)
    copy = submitted.copy_with(tracked)
    head = copy.split(b"\r\n\r\n", 1)[0]  # the body's own text may say anything
    assert b"Bcc" not in head and b"other@example.net" not in head and b"X-Deadpixel" not in head
    assert copy.startswith(b"From: a@example.com\r\nTo: b@example.org\r\nSubject: test\r\nMessage-ID:")
    before, after = _parts(raw), _parts(copy)
    assert len(before) == len(after)
    changed = [i for i, (old, new) in enumerate(zip(before, after, strict=True)) if old != new]
    assert len(changed) == 1
    (index,) = changed
    assert before[index][:2] == after[index][:2] == ("text/html", None)
    assert after[index][2].replace("\r\n", "\n") == tracked.replace("\r\n", "\n")


def test_a_missing_closing_delimiter_still_finds_the_html() -> None:
    raw = (
        HEADERS
        + b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n--b\r\n'
        + _leaf("text/html", "<p>hi</p>", "utf-8", "7bit")
    )
    assert parse(raw).html == "<p>hi</p>"


def test_a_boundary_counts_only_at_the_start_of_a_line() -> None:
    html = "<p>a--b and</p>\n--bx is not one either</p>"
    alternative = _multipart("alternative", "b", [_leaf("text/html", html, "utf-8", "8bit")])
    assert parse(HEADERS + alternative).html == html.replace("\n", "\r\n")


def test_what_is_not_tracked_and_why() -> None:
    assert parse(HEADERS + _leaf("text/plain", "hi", "utf-8", "7bit")).untracked == "no HTML part"
    attachment = _leaf("text/html", "<p>x</p>", "utf-8", "7bit", "Content-Disposition: attachment\r\n")
    attached_only = _multipart(
        "mixed", "m", [_leaf("text/plain", "see attached", "utf-8", "7bit"), attachment]
    )
    assert parse(HEADERS + attached_only).untracked == "no HTML part"
    unknown = _leaf("text/html", "<p>x</p>", "utf-8", "7bit").replace(b"utf-8", b"x-unknown-charset")
    assert parse(HEADERS + unknown).untracked == "HTML part not readable as x-unknown-charset"
    uuencoded = _leaf("text/html", "<p>x</p>", "utf-8", "x-uuencode")
    assert parse(HEADERS + uuencoded).untracked == "HTML part in an unknown transfer encoding (x-uuencode)"
    nested_signed = _multipart(
        "mixed", "outer", [_multipart("signed", "inner", [_leaf("text/html", "<p>x</p>", "utf-8", "7bit")])]
    )
    assert parse(HEADERS + nested_signed).untracked == "signed (multipart/signed)"


def test_a_line_pushed_past_998_octets_makes_that_part_quoted_printable() -> None:
    html = "<html><body><p>" + "x" * 950 + "</p></body></html>"
    alternative = _multipart(
        "alternative",
        "b",
        [_leaf("text/plain", "y" * 990, "utf-8", "7bit"), _leaf("text/html", html, "utf-8", "7bit")],
    )
    raw = HEADERS + alternative
    submitted = parse(raw)
    tracked, _ = track_html(html, PIXEL, None)
    copy = submitted.copy_with(tracked)
    assert max(map(len, copy.splitlines())) == 990  # the text part's line, untouched
    assert copy.count(b"Content-Transfer-Encoding: quoted-printable") == 1
    assert _parts(copy)[1] == ("text/html", None, tracked)
    assert copy.split(b"--b\r\n")[1] == raw.split(b"--b\r\n")[1]
    short = submitted.copy_with(html.replace("x" * 950, "x"))
    assert b"quoted-printable" not in short  # a short line keeps the part as it was


def test_a_campaign_name_fits_its_column() -> None:
    raw = HEADERS.replace(b"X-Deadpixel-Campaign: c", b"X-Deadpixel-Campaign: " + b"x" * 300)
    assert parse(raw + _leaf("text/html", "<p>hi</p>", "utf-8", "7bit")).campaign == "x" * 200


def test_the_resubmission_key_is_the_account_the_message_id_and_the_content() -> None:
    one = HEADERS + _leaf("text/html", "<p>1</p>", "utf-8", "7bit")
    two = HEADERS + _leaf("text/html", "<p>2</p>", "utf-8", "7bit")
    assert parse(one).key_for("ann") == parse(one).key_for("ann")  # a retry is the same submission
    assert parse(one).key_for("ann") != parse(two).key_for("ann")  # same Message-ID, other content
    assert parse(one).key_for("ann") != parse(one).key_for("bob")  # same message, other account
    without_id = [m.replace(b"Message-ID: <m@example.com>\r\n", b"") for m in (one, two)]
    assert parse(without_id[0]).key != parse(without_id[1]).key
    assert parse(without_id[0]).key == parse(without_id[0]).key
    assert parse(without_id[0]).key != parse(one).key
