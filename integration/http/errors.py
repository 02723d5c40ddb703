"""The one error shape, `{"error": code, "detail": sentence}`, for every answer that is not a
success: our own errors (AppError and its kinds), Starlette's 404 and 405, and anything
unexpected (500, logged with its traceback). An endpoint whose errors another API defines (the
/v1 intake answers as Segment does) names that shape in its operation (`ErrorShape`), and its
errors are rendered in it instead."""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from integration.errors import AppError
from integration.http.openapi import ErrorShape
from integration.http.responses import JSON


def _shape(request: Request) -> ErrorShape | None:
    """The error shape the matched endpoint's operation declares, if any."""
    operation = getattr(request.scope.get("endpoint"), "__openapi__", None)
    shape = getattr(operation, "error_shape", None)
    return shape if isinstance(shape, ErrorShape) else None


def _body(request: Request, error: str, detail: str, extra: dict[str, Any]) -> dict[str, Any]:
    shape = _shape(request)
    if shape is not None:
        return shape.render(error, detail, extra)
    return {"error": error, "detail": detail, **extra}


async def app_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AppError)
    body = _body(request, exc.error, exc.detail, exc.extra)
    return JSON(body, status_code=exc.status_code, headers=exc.headers())


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 in the same JSON shape as every other error."""
    assert isinstance(exc, HTTPException)
    error = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSON(
        _body(request, error, str(exc.detail), {}),
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def unexpected(request: Request, exc: Exception) -> Response:
    """A fault of ours. Starlette logs it with its traceback after this answer is sent; the
    caller learns nothing of its insides."""
    return JSON({"error": "internal_error", "detail": "an internal error occurred"}, 500)


EXCEPTION_HANDLERS = {AppError: app_error, HTTPException: http_error, Exception: unexpected}
