"""A CSV export's file name comes from its campaign's name, which may hold anything: the download still has a
valid ``Content-Disposition`` with an ASCII stand-in and the real name in ``filename*``."""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

import httpx
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from deadpixel.accounts.users import create_user
from deadpixel.config import Settings
from deadpixel.store.db import create_engine
from deadpixel.store.messages import create_message
from deadpixel.web.download import attachment
from tests.conftest import Server

# What RFC 9110 allows in a field value: visible ASCII, spaces and tabs (no CR, LF or other controls).
FIELD_VALUE = re.compile(r"[\x20-\x7e]*")


def parsed(header: str) -> tuple[str, str | None]:
    """The ``filename`` and, decoded, the ``filename*`` of the header, each in the exact syntax RFC 6266
    and RFC 8187 give (a quoted string without quotes or backslashes; UTF-8 in attr-chars and %XX)."""
    found = re.fullmatch(
        r'attachment; filename="([^"\\]*)"(?:; filename\*=UTF-8\'\'([A-Za-z0-9!#$&+.^_`|~%-]*))?', header
    )
    assert found is not None, header
    real = found.group(2)
    return found.group(1), None if real is None else unquote(real, errors="strict")


@hypothesis_settings(max_examples=500, deadline=None)
@given(st.text(max_size=80))
def test_any_name_makes_a_valid_header_that_keeps_the_name(name: str) -> None:
    header = attachment(name)
    assert FIELD_VALUE.fullmatch(header), header
    plain, real = parsed(header)
    assert plain and not re.search(r'["\\/;%]', plain) and plain[0] not in " ." and plain[-1] not in " ."
    expected = "".join(
        "_" if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or c in "/\\" else c for c in name
    ).strip()
    if real is None:  # the stand-in is the name, or the name has nothing a file could be called
        assert plain == expected or not expected.strip(".")
    elif not any(0xD800 <= ord(c) < 0xE000 for c in name):  # lone surrogates cannot be UTF-8
        assert real == expected


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the store plays no part
@pytest.mark.slow
def test_a_real_server_exports_a_campaign_named_with_a_line_break(settings: Settings, server: Server) -> None:
    names = ["x\r\ny", 'Frühling "24"; a/b', "spring"]
    engine = create_engine(settings.database_url)
    with engine.begin() as conn:
        create_user(conn, "ann", "correct horse")
        for name in names:
            create_message(conn, recipient="ann@example.com", subject="Hi", campaign=name)
    engine.dispose()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        csrf = client.get("/login").text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        signed = client.post(
            "/login", data={"csrf": csrf, "name": "ann", "password": "correct horse", "next": "/"}
        )
        assert signed.status_code == 303
        found = {}
        for name in names:
            download = client.get(f"/exports/recipients.csv?campaign={quote(name)}")
            assert download.status_code == 200, (name, download.text[:200])
            assert "ann@example.com" in download.text
            found[name] = parsed(download.headers["content-disposition"])
    assert found == {
        "x\r\ny": ("x__y-recipients.csv", None),  # nothing more to say in filename*
        'Frühling "24"; a/b': ("Fr_hling _24__ a_b-recipients.csv", 'Frühling "24"; a_b-recipients.csv'),
        "spring": ("spring-recipients.csv", None),
    }
