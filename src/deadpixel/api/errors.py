"""Every API error is JSON ``{"error": ...}`` (plus ``parameter`` when one input is to blame).

``HANDLERS`` is the one translation: ``ApiError`` carries its own status; any other ``DeadpixelError`` that
reaches a request is something the client asked that cannot be done, a 400 with its one line; Starlette's
404 and 405 keep their status; anything else is a 503 (database away) or a logged 500.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from deadpixel.errors import DeadpixelError

log = logging.getLogger(__name__)

REASONS = {404: "not found", 405: "method not allowed"}


class ApiError(DeadpixelError):
    def __init__(
        self, status: int, message: str, parameter: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.parameter = parameter
        self.headers = headers


def error_response(
    status: int, message: str, parameter: str | None = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body: dict[str, str] = {"error": message}
    if parameter is not None:
        body["parameter"] = parameter
    return JSONResponse(body, status_code=status, headers=headers)


async def api_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, exc.parameter, exc.headers)


async def http_error(_: Request, exc: Exception) -> Response:
    """Starlette's own 404 and 405 (with its Allow header), in the API's shape."""
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, REASONS.get(exc.status_code, exc.detail), headers=exc.headers)


async def server_error(_: Request, exc: Exception) -> Response:
    """503 when the database is busy or away (the client may retry), 500 for anything else."""
    if isinstance(exc, OperationalError):
        log.warning("API request: the database did not answer", exc_info=exc)
        return error_response(
            503, "the database is busy or unreachable; try again", headers={"retry-after": "1"}
        )
    log.error("API request failed", exc_info=exc)
    return error_response(500, "internal error")


async def deadpixel_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, DeadpixelError)
    return error_response(400, exc.one_line())


Handler = Callable[[Request, Exception], Coroutine[Any, Any, Response]]
# Starlette picks the handler of the nearest class in the exception's MRO: ApiError's before its root's.
HANDLERS: dict[Any, Handler] = {
    ApiError: api_error,
    DeadpixelError: deadpixel_error,
    HTTPException: http_error,
    Exception: server_error,
}


def bad_parameter(parameter: str, problem: str) -> ApiError:
    return ApiError(400, f"{parameter}: {problem}", parameter)
