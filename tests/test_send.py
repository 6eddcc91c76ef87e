"""``deadpixel send`` as a user runs it: a real process, a real SMTP server, a real store (both databases)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlalchemy import select

from deadpixel.config import ConfigError, Settings, load_settings
from deadpixel.events import HIDDEN_LINK
from deadpixel.mail.compose import PIXEL_TEMPLATE
from deadpixel.security.keys import load_or_create_keys
from deadpixel.security.tokens import TokenSigner
from deadpixel.store.db import create_engine
from deadpixel.store.links import link_url
from deadpixel.store.schema import messages

from .helpers import deadpixel, make_certificate
from .smtp_sink import HOST, SMTPServerHandle, smtp_fixture  # noqa: F401  (the fixture)

# What these tests check does not depend on the database; the others run on both.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

HTML = (
    "<!doctype html><html><head><style>p{color:red}</style></head><body>"
    "<!--[if mso]><p>Outlook only</p><![endif]-->"
    '<p>Gr\u00fc\u00dfe, <a href="https://shop.example/sale?a=1&amp;b=2">sale</a> and '
    '<a href="mailto:help@example.com">help</a> and '
    '<a data-notrack href="https://private.example/">private</a></p>'
    "</body></html>"
)


@pytest.fixture
def html_file(tmp_path: Path) -> Path:
    path = tmp_path / "body.html"
    path.write_text(HTML, encoding="utf-8")
    return path


def stored(settings: Settings) -> dict[str, Any]:
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        rows = {row.id: row for row in conn.execute(select(messages))}
    engine.dispose()
    return rows


def report(campaign: str | None = None) -> Any:
    return json.loads(deadpixel("report", *([campaign] if campaign else []), "--json").stdout)


def test_send_delivers_one_tracked_message(
    smtp: SMTPServerHandle, settings: Settings, html_file: Path
) -> None:
    before = time.time()
    result = deadpixel(
        "send", "--to", "Zo\u00eb <zoe@example.org>", "--cc", "ann@example.net",
        "--subject", "Gr\u00fc\u00dfe", "--html", str(html_file), "--campaign", "launch", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["status"], summary["tracked_links"], summary["refused"]) == ("sent", 1, {})
    mid = summary["message_id"]

    (got,) = smtp.sink.messages
    assert got.mail_from == "news@example.com"
    assert got.rcpt_tos == ["zoe@example.org", "ann@example.net"]
    message = got.message
    assert message["Subject"] == "Gr\u00fc\u00dfe" and b"=?utf-8?" in got.content  # RFC 2047 on the wire
    assert message["To"] == "Zo\u00eb <zoe@example.org>" and message["Cc"] == "ann@example.net"
    assert message["Message-ID"] and message["Date"] and message["MIME-Version"] == "1.0"
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    html = got.html()
    signer = TokenSigner(load_or_create_keys(settings.keys_file))
    pixel = PIXEL_TEMPLATE.format(src=f"{settings.base_url}/o/{signer.pixel_token(mid)}.gif")
    assert html.count("<img ") == 1 and html.count(pixel) == 1
    assert html.index(pixel) < html.index("</body>")
    assert "<!--[if mso]><p>Outlook only</p><![endif]-->" in html and "<style>p{color:red}</style>" in html
    assert 'href="mailto:help@example.com"' in html and '<a href="https://private.example/">' in html
    hidden, tracked = [h.split('"', 1)[0] for h in html.split('href="')[1:] if "/c/" in h]
    assert tracked.startswith(settings.base_url + "/c/")
    assert signer.click_target(tracked.rsplit("/", 1)[1]) == (mid, 0)
    assert signer.click_target(hidden.rsplit("/", 1)[1]) == (mid, HIDDEN_LINK)  # only machines follow it
    assert hidden not in text_of(message)
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        assert link_url(conn, mid, 0) == "https://shop.example/sale?a=1&b=2"
        assert link_url(conn, mid, HIDDEN_LINK) == "https://shop.example/"
    engine.dispose()
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "sale (https://shop.example/sale?a=1&b=2)" in text  # the text part shows real destinations

    row = stored(settings)[mid]
    assert row.status == "sent" and before <= row.sent_at <= time.time()
    assert (row.recipient, row.subject) == ("zoe@example.org", "Gr\u00fc\u00dfe")  # bare: `forget` finds it
    assert report("launch")["sent"] == 1
    assert (
        "Sent message"
        in deadpixel("send", "--to", "b@example.org", "--subject", "s", "--html", str(html_file)).stdout
    )


def test_a_refused_message_is_marked_failed_and_not_counted(
    smtp: SMTPServerHandle, settings: Settings, html_file: Path
) -> None:
    deadpixel("pixel", "new", "--to", "hand@example.com", "--campaign", "c")  # hand-made: counts as sent
    smtp.sink.reject.add("gone@example.org")
    result = deadpixel(
        "send", "--to", "gone@example.org", "--subject", "s", "--html", str(html_file), "--campaign", "c"
    )
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("Error: not sent to gone@example.org: permanent SMTP failure 550")
    assert "no such user here" in line and "marked failed" in line
    statuses = sorted(row.status for row in stored(settings).values())
    assert statuses == ["failed", "sent"]
    assert report("c")["sent"] == 1
    assert smtp.sink.messages == []


@SQLITE_ONLY
def test_a_partly_refused_message_is_sent_with_a_warning(
    smtp: SMTPServerHandle, settings: Settings, html_file: Path
) -> None:
    smtp.sink.reject.add("gone@example.org")
    result = deadpixel(
        "send",
        "--to",
        "a@example.org",
        "--cc",
        "gone@example.org",
        "--subject",
        "s",
        "--html",
        str(html_file),
    )
    assert result.returncode == 0
    assert "Warning: the server refused gone@example.org: 550" in result.stderr
    assert [m.rcpt_tos for m in smtp.sink.messages] == [["a@example.org"]]


@SQLITE_ONLY
def test_nobody_listening_fails_clearly_after_retries(
    smtp: SMTPServerHandle, settings: Settings, html_file: Path
) -> None:
    smtp.stop()
    result = deadpixel(
        "send", "--to", "a@example.org", "--subject", "s", "--html", str(html_file), "--retries", "0"
    )
    assert result.returncode == 1
    assert "Error: not sent to a@example.org: temporary SMTP failure" in result.stderr
    assert [row.status for row in stored(settings).values()] == ["failed"]


@SQLITE_ONLY
def test_dry_run_writes_the_eml_and_sends_nothing(
    smtp: SMTPServerHandle, settings: Settings, html_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.eml"
    result = deadpixel(
        "send", "--to", "a@example.org", "--subject", "s", "--html", str(html_file), "--dry-run", str(out)
    )
    assert result.returncode == 0 and f"to {out}" in result.stdout
    raw = out.read_bytes()
    assert b"Subject: s\r\n" in raw and b"/o/" in raw and b"multipart/alternative" in raw
    assert smtp.sink.messages == []
    assert [row.status for row in stored(settings).values()] == ["draft"]
    assert report()["sent"] == 0


@SQLITE_ONLY
def test_no_track_sends_the_html_untouched_and_records_nothing(
    smtp: SMTPServerHandle, settings: Settings, html_file: Path, tmp_path: Path
) -> None:
    text = tmp_path / "body.txt"
    text.write_text("Plain words\n", encoding="utf-8")
    result = deadpixel(
        "send",
        "--to",
        "a@example.org",
        "--subject",
        "s",
        "--html",
        str(html_file),
        "--text",
        str(text),
        "--no-track",
    )
    assert result.returncode == 0 and "untracked message" in result.stdout
    (got,) = smtp.sink.messages
    assert got.html() == HTML.replace("\n", "\r\n")
    assert got.message.get_body(("plain",)).get_content() == "Plain words\r\n"  # type: ignore[union-attr]
    assert stored(settings) == {}


@SQLITE_ONLY
def test_bad_input_gets_one_clear_line(
    smtp: SMTPServerHandle, settings: Settings, html_file: Path, tmp_path: Path
) -> None:
    args = ["send", "--to", "a@example.org", "--subject", "s", "--html", str(html_file)]
    cases = [
        ({"DEADPIXEL_SMTP_TLS": "tls1.3"}, args, "Error: bad setting: DEADPIXEL_SMTP_TLS: must be one of"),
        ({"DEADPIXEL_SMTP_PORT": "99999"}, args, "Error: bad setting: DEADPIXEL_SMTP_PORT: must be between"),
        ({"DEADPIXEL_SMTP_HOST": ""}, args, "Error: bad setting: DEADPIXEL_SMTP_HOST: is not set"),
        (
            {"DEADPIXEL_MAIL_FROM": "not an address"},
            args,
            "Error: bad setting: DEADPIXEL_MAIL_FROM: must be one",
        ),
        (
            {"DEADPIXEL_MAIL_FROM": ""},
            args,
            "Error: bad setting: DEADPIXEL_MAIL_FROM: is not set and no --from",
        ),
        ({"DEADPIXEL_SMTP_PASSWORD": "x"}, args, "Error: bad setting: DEADPIXEL_SMTP_PASSWORD: is set but"),
        (
            {},
            ["send", "--to", "not an address", "--subject", "s", "--html", str(html_file)],
            "Error: not sent: --to 'not an address': not an email address",
        ),
        ({}, [*args[:-1], str(tmp_path / "missing.html")], "does not exist"),
    ]
    latin1 = tmp_path / "latin1.html"
    latin1.write_bytes("<p>Gr\u00fc\u00dfe</p>".encode("latin-1"))
    cases.append(({}, [*args[:-1], str(latin1)], "is not UTF-8 text"))
    for extra_env, argv, expected in cases:
        result = deadpixel(*argv, env=extra_env)
        assert result.returncode != 0, argv
        assert expected in result.stderr, (expected, result.stderr)
        assert "Traceback" not in result.stderr
    assert stored(settings) == {} and smtp.sink.messages == []


def test_an_address_smtp_would_read_as_another_is_refused_in_to_and_cc(
    smtp: SMTPServerHandle, settings: Settings, html_file: Path
) -> None:
    """``"victim@evil.example>"@example.com`` is refused, not unquoted into RCPT TO:<victim@evil.example>."""
    forged = '"victim@evil.example>"@example.com'
    base = ["send", "--subject", "s", "--html", str(html_file)]
    for argv, flag in (
        ([*base, "--to", forged], "--to"),
        ([*base, "--to", "ann@example.org", "--cc", forged], "--cc"),
        ([*base, "--to", "ann@example.org", "--cc", '"a b"@example.com'], "--cc"),
    ):
        result = deadpixel(*argv)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.startswith(f"Error: not sent: {flag} ") and "needs quoting" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert smtp.sink.messages == [] and stored(settings) == {}
    ok = deadpixel(
        *base, "--to", '"Ann" <ann@example.org>', "--cc", "ANN@example.org", "--cc", "b@example.org"
    )
    assert ok.returncode == 0, ok.stderr
    (got,) = smtp.sink.messages
    assert got.rcpt_tos == ["ann@example.org", "b@example.org"]  # one RCPT per mailbox
    assert got.message["To"] == "Ann <ann@example.org>"


def test_smtp_settings_defaults(tmp_path: Path) -> None:
    s = load_settings({"DEADPIXEL_DATA_DIR": str(tmp_path), "DEADPIXEL_SMTP_HOST": "mail.example"})
    assert (s.smtp_host, s.smtp_port, s.smtp_tls, s.smtp_username, s.mail_from) == (
        "mail.example", None, "starttls", None, None,
    )  # fmt: skip
    from deadpixel.send.smtp_config import smtp_settings

    assert smtp_settings(s).port == 587
    assert smtp_settings(load_settings({"DEADPIXEL_DATA_DIR": str(tmp_path), "DEADPIXEL_SMTP_HOST": "m",
                                        "DEADPIXEL_SMTP_TLS": "SSL"})).port == 465  # fmt: skip
    with pytest.raises(ConfigError, match="DEADPIXEL_MAIL_FROM"):
        load_settings(
            {"DEADPIXEL_DATA_DIR": str(tmp_path), "DEADPIXEL_MAIL_FROM": "a@b.example, c@d.example"}
        )
    toml = tmp_path / "deadpixel.toml"
    toml.write_text('smtp_host = "smtp.example"\nsmtp_port = 2525\nmail_from = "Me <me@example.com>"\n')
    s = load_settings({"DEADPIXEL_DATA_DIR": str(tmp_path)})
    assert (s.smtp_host, s.smtp_port, s.mail_from) == ("smtp.example", 2525, "Me <me@example.com>")


# --- STARTTLS and AUTH through the command --------------------------------------------------------------


@SQLITE_ONLY
def test_starttls_and_auth_from_settings(
    smtp: SMTPServerHandle, settings: Settings, html_file: Path, tmp_path: Path
) -> None:
    import ssl

    from aiosmtpd.controller import Controller

    made = make_certificate(tmp_path, host=HOST)
    cert, key = made.cert, made.key
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    logins: list[bytes] = []

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"user", b"s3cret")
        if ok:
            logins.append(data.login)
        return AuthResult(success=ok, handled=False)

    smtp.stop()
    smtp.controller = Controller(
        smtp.sink, hostname=HOST, port=smtp.port, tls_context=context, require_starttls=True,
        auth_required=True, authenticator=authenticator,
    )  # fmt: skip
    smtp.controller.start()
    base = {"DEADPIXEL_SMTP_TLS": "starttls", "DEADPIXEL_SMTP_USERNAME": "user", "SSL_CERT_FILE": str(cert)}
    args = ["send", "--to", "a@example.org", "--subject", "s", "--html", str(html_file), "--retries", "0"]
    ok = deadpixel(*args, env={**base, "DEADPIXEL_SMTP_PASSWORD": "s3cret"})
    assert ok.returncode == 0, ok.stderr
    assert logins == [b"user"] and len(smtp.sink.messages) == 1
    wrong = deadpixel(*args, env={**base, "DEADPIXEL_SMTP_PASSWORD": "wrong"})
    assert wrong.returncode == 1 and "permanent SMTP failure 535" in wrong.stderr
    untrusted = deadpixel(
        *args, env={**base, "DEADPIXEL_SMTP_PASSWORD": "s3cret", "SSL_CERT_FILE": "/nonexistent"}
    )
    assert untrusted.returncode == 1 and "certificate" in untrusted.stderr
    assert len(smtp.sink.messages) == 1


def text_of(message: Any) -> str:
    return str(message.get_body(("plain",)).get_content())
