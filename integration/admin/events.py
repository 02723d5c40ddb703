"""/api/environments/{id}/events: every received message, newest first, with filters."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import ColumnElement, and_, or_, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from integration.admin import pagination, params
from integration.admin.common import environment, unit_of_work
from integration.admin.pagination import PAGE_PARAMS
from integration.admin.schemas import EventOut, EventPage
from integration.openapi import Param, operation
from integration.store.models import Event
from integration.web import JSON

DATE = {"type": "string", "format": "date-time"}
FILTERS = {
    "user_id": Event.user_id,
    "anonymous_id": Event.anonymous_id,
    "company": Event.group_id,
    "type": Event.type,
    "name": Event.name,
}


@operation(
    summary="List events newest first; filter by user, anonymous id, company, type, name, time",
    response=EventPage,
    query=(
        *(Param(name, f"exact {name}") for name in FILTERS),
        Param("since", "timestamp at or after", DATE),
        Param("until", "timestamp before", DATE),
        *PAGE_PARAMS,
    ),
)
async def list_events(request: Request) -> Response:
    size, cursor = pagination.limit(request), pagination.decode(request, 2)
    since, until = params.timestamp(request, "since"), params.timestamp(request, "until")
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        stmt = select(Event).where(Event.environment_id == env.id)
        for name, column in FILTERS.items():
            value = params.text(request, name)
            if value is not None:
                stmt = stmt.where(column == value)
        if since:
            stmt = stmt.where(Event.timestamp >= since)
        if until:
            stmt = stmt.where(Event.timestamp < until)
        if cursor:
            stmt = stmt.where(_before(cursor))
        stmt = stmt.order_by(Event.timestamp.desc(), Event.id.desc()).limit(size + 1)
        rows = list(await session.scalars(stmt))
    items = [EventOut.model_validate(e, from_attributes=True).model_dump(mode="json") for e in rows]
    last = rows[size - 1] if len(rows) > size else None
    key = [last.timestamp.isoformat(), last.id] if last else None
    return JSON(pagination.page(items, size, key))


def _before(cursor: list[object]) -> ColumnElement[bool]:
    if not isinstance(cursor[0], str):
        raise pagination.invalid_cursor()
    try:
        at = datetime.fromisoformat(cursor[0])
        at = (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        raise pagination.invalid_cursor() from None
    last_id = pagination.row_id(cursor[1])
    return or_(Event.timestamp < at, and_(Event.timestamp == at, Event.id < last_id))


routes = [Route("/environments/{env_id}/events", list_events, methods=["GET"])]
