"""Keyset pagination for the admin API and the console: a page is fetched with one row more than
it shows, and the next starts after its last row shown (the API's opaque cursors carry that
row's sort key as base64 JSON)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any, TypeVar

import orjson
from starlette.requests import Request

from integration.errors import BadRequest
from integration.http.openapi import Param

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_ROW_ID = 2**63 - 1  # ids are BIGINT
Row = TypeVar("Row")
PAGE_PARAMS = (
    Param(
        "limit",
        f"page size, 1 to {MAX_LIMIT}",
        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
    ),
    Param("cursor", "next_cursor of the previous page"),
)


def limit(request: Request[Any]) -> int:
    raw = request.query_params.get("limit", str(DEFAULT_LIMIT))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadRequest(
            f"limit must be a whole number from 1 to {MAX_LIMIT}",
            error="invalid_field",
            field="limit",
        )
    return int(raw)


def encode(key: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(key)).decode().rstrip("=")


def decode(request: Request[Any], size: int) -> list[Any] | None:
    raw = request.query_params.get("cursor")
    if not raw:
        return None
    try:
        key = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        key = None
    if not isinstance(key, list) or len(key) != size:
        raise invalid_cursor()
    return key


def invalid_cursor() -> BadRequest:
    return BadRequest("cursor is not one this API gave out", error="invalid_field", field="cursor")


def row_id(value: Any) -> int:
    """A row id taken from a cursor: a positive BIGINT, or the cursor is not one of ours."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_ROW_ID:
        raise invalid_cursor()
    return value


def after_id(request: Request[Any]) -> int | None:
    """The cursor of the lists ordered by id, newest first: the last id shown."""
    key = decode(request, 1)
    return None if key is None else row_id(key[0])


def page(items: list[dict[str, Any]], size: int, key: list[Any] | None) -> dict[str, Any]:
    """`items` was fetched with size+1 rows: the extra one says whether a next page exists."""
    more = len(items) > size
    return {"items": items[:size], "next_cursor": encode(key) if more and key else None}


def last_shown(rows: Sequence[Row], size: int) -> Row | None:
    """The last row of a page fetched with `size` + 1 rows, when the extra one says another
    page follows (the next page starts after it); None on the last page."""
    return rows[size - 1] if len(rows) > size else None
