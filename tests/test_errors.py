"""deadpixel's own errors share one root, and each side translates that root once.

The command line prints a DeadpixelError as one line with exit status 1, whichever command raised it (and
keeps a traceback for anything else: a bug); the JSON API answers it as a 400 ``{"error": ...}`` unless it
is an ApiError carrying its own status. Commands run in process through click's CliRunner.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from deadpixel.api.errors import HANDLERS, ApiError
from deadpixel.cli import main
from deadpixel.errors import DeadpixelError
from deadpixel.security.keys import KeyFileError


def test_every_named_error_class_derives_from_the_root() -> None:
    from deadpixel.accounts.users import UserError
    from deadpixel.config import ConfigError
    from deadpixel.mail.addresses import BadAddress
    from deadpixel.reports.analytics import UnknownCampaign
    from deadpixel.store.api_tokens import TokenError

    for cls in (UnknownCampaign, ConfigError, BadAddress, TokenError, UserError, KeyFileError, ApiError):
        assert issubclass(cls, DeadpixelError), cls
    # The built-in bases callers catch stay.
    assert issubclass(UnknownCampaign, LookupError) and issubclass(BadAddress, ValueError)


def test_the_cli_prints_a_deadpixel_error_as_one_line(env: dict[str, str]) -> None:
    result = CliRunner().invoke(main, ["token", "create", "no/slash"])
    assert result.exit_code == 1
    assert result.output == (
        "Error: 'no/slash' is not a usable name: 1 to 64 letters, digits or . _ @ + -,"
        " not starting with a symbol\n"
    )


def test_the_cli_frames_a_bad_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEADPIXEL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DEADPIXEL_PORT", "seventy")
    result = CliRunner().invoke(main, ["suppression", "list"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: bad setting: DEADPIXEL_PORT: ")
    assert result.output.count("\n") == 1


def _app(exc: Exception) -> TestClient:
    async def fail(_: Request) -> Response:
        raise exc

    return TestClient(
        Starlette(routes=[Route("/", fail)], exception_handlers=HANDLERS), raise_server_exceptions=False
    )


def test_the_api_answers_a_deadpixel_error_as_a_client_error() -> None:
    response = _app(KeyFileError("the key file is not readable")).get("/")
    assert (response.status_code, response.json()) == (400, {"error": "the key file is not readable"})


def test_an_api_error_keeps_its_own_status_and_anything_else_is_a_500() -> None:
    response = _app(ApiError(404, "no campaign named 'x'")).get("/")
    assert (response.status_code, response.json()) == (404, {"error": "no campaign named 'x'"})
    response = _app(RuntimeError("a bug")).get("/")
    assert (response.status_code, response.json()) == (500, {"error": "internal error"})
