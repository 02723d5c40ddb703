"""The one error shape, `{"error": code, "detail": sentence}`, for every answer that is not a
success: our own errors (AppError and its kinds), Starlette's 404 and 405, and anything
unexpected (500, logged with its traceback)."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from integration.errors import AppError
from integration.http.responses import JSON


async def app_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AppError)
    return JSON(exc.body(), status_code=exc.status_code, headers=exc.headers())


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 in the same JSON shape as every other error."""
    assert isinstance(exc, HTTPException)
    error = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSON(
        {"error": error, "detail": str(exc.detail)},
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def unexpected(request: Request, exc: Exception) -> Response:
    """A fault of ours. Starlette logs it with its traceback after this answer is sent; the
    caller learns nothing of its insides."""
    return JSON({"error": "internal_error", "detail": "an internal error occurred"}, 500)


EXCEPTION_HANDLERS = {AppError: app_error, HTTPException: http_error, Exception: unexpected}
