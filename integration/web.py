"""HTTP plumbing shared by every route: JSON responses, bounded body reads, the error shape."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import orjson
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from integration.errors import AppError, BadRequest, PayloadTooLarge
from integration.spec import MessageError, decode
from integration.store.db import is_unavailable

log = logging.getLogger(__name__)


class JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


async def read_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing with 413 as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body is {declared} bytes; the limit is {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, limit: int) -> Any:
    body = await read_body(request, limit)
    if not body.strip():
        raise BadRequest("body is empty; send a JSON object", error="invalid_json")
    try:
        return decode(body)
    except MessageError as exc:
        raise BadRequest(exc.detail, error=exc.error) from None


async def app_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AppError)
    return JSON(exc.body(), status_code=exc.status_code)


async def database_error(request: Request, exc: Exception) -> Response:
    """Unreachable database: 503 so that Segment (or any caller) retries. Anything else is ours."""
    if is_unavailable(exc):
        log.warning("database unavailable: %s", type(exc).__name__)
        return JSON(
            {"error": "database_unavailable", "detail": "the database is unreachable; retry later"},
            status_code=503,
            headers={"Retry-After": "5"},
        )
    log.exception("database error")
    return JSON({"error": "internal_error", "detail": "an internal error occurred"}, 500)


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 in the same JSON shape as every other error."""
    assert isinstance(exc, HTTPException)
    error = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSON(
        {"error": error, "detail": str(exc.detail)},
        status_code=exc.status_code,
        headers=exc.headers,
    )


EXCEPTION_HANDLERS = {
    AppError: app_error,
    HTTPException: http_error,
    SQLAlchemyError: database_error,
    asyncpg.PostgresError: database_error,  # the webhook's writers use the driver directly
    asyncpg.InterfaceError: database_error,
    OSError: database_error,
}
