"""HTTP plumbing shared by every route: JSON responses, bounded body reads, the error shape."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg
import orjson
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from integration.errors import AppError, BadRequest, ClientGone, PayloadTooLarge, Unavailable
from integration.spec import MessageError, decode
from integration.store.db import is_unavailable

log = logging.getLogger(__name__)


class JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


class ByteBudget:
    """Bytes of request bodies this process holds at once. Past the budget a request is told to
    come back (503 with Retry-After) instead of being read: memory stays bounded whatever
    arrives at the same time. One request alone is always admitted up to the body limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    @contextmanager
    def reserve(self) -> Iterator[Reservation]:
        held = Reservation(self)
        try:
            yield held
        finally:
            self.used -= held.size

    def _grow(self, held: Reservation, size: int) -> None:
        extra = size - held.size
        if extra <= 0:
            return
        if self.used and self.used + extra > self.limit:
            raise Unavailable(
                "the server is receiving too much at once; retry shortly",
                error="overloaded",
                retry_after=2,
            )
        self.used += extra
        held.size = size


class Reservation:
    """The share of a ByteBudget one request holds until it is answered."""

    def __init__(self, budget: ByteBudget) -> None:
        self.budget = budget
        self.size = 0

    def grow(self, size: int) -> None:
        self.budget._grow(self, size)


async def read_body(request: Request, limit: int, held: Reservation | None = None) -> bytes:
    """Read the body, refusing with 413 as soon as it passes `limit` bytes, and with 503 when
    the process's byte budget (if given) cannot hold it."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit():
        if int(declared) > limit:
            raise PayloadTooLarge(f"body is {declared} bytes; the limit is {limit} bytes")
        if held is not None:
            held.grow(int(declared))
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"body is over the limit of {limit} bytes")
            if held is not None:
                held.grow(size)
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientGone("the client disconnected before its body was read") from None
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
    return JSON(exc.body(), status_code=exc.status_code, headers=exc.headers())


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
