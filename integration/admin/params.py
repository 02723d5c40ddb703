"""Query parameters shared by the data routes, parsed with errors that name the parameter."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request

from integration.errors import BadRequest
from integration.spec import MAX_TEXT_CHARS


def timestamp(request: Request[Any], name: str) -> datetime | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        # In UTC, which the database stores; a time near year 1 or 9999 may not fit there.
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        raise BadRequest(
            f"{name} must be an ISO-8601 date-time", error="invalid_field", field=name
        ) from None


def text(request: Request[Any], name: str) -> str | None:
    value = request.query_params.get(name)
    if value is not None and ("\x00" in value or len(value) > MAX_TEXT_CHARS):
        raise BadRequest(
            f"{name} must be at most {MAX_TEXT_CHARS} characters, without NUL",
            error="invalid_field",
            field=name,
        )
    return value


def trait_filters(request: Request[Any]) -> list[tuple[str, str]]:
    """`trait=plan:pro` (repeatable): the trait's value, as text, equals the given text."""
    filters = []
    for raw in request.query_params.getlist("trait"):
        key, sep, value = raw.partition(":")
        if not sep or not key or "\x00" in raw:
            raise BadRequest("trait must look like key:value", error="invalid_field", field="trait")
        filters.append((key, value))
    return filters
