"""/api/environments/{id}/events: every received message (and, for environments that keep
them, copies of the outbound ones), newest first, with filters."""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.responses import Response
from starlette.routing import Route

from integration.admin import params
from integration.admin.common import AdminRequest, environment, unit_of_work
from integration.admin.schemas import EventOut, EventPage
from integration.errors import BadRequest
from integration.http import pagination
from integration.http.openapi import Param, operation
from integration.http.pagination import PAGE_PARAMS
from integration.http.responses import JSON
from integration.inbound import queries
from integration.store.models import EVENT_DIRECTIONS

DATE = {"type": "string", "format": "date-time"}
FILTERS = ("user_id", "anonymous_id", "company", "type", "name")


@operation(
    summary="List events newest first; filter by user, anonymous id, company, type, name,"
    " direction, time",
    scope="read",
    response=EventPage,
    query=(
        *(Param(name, f"exact {name}") for name in FILTERS),
        Param(
            "direction",
            "inbound (sent by Segment) or outbound (copies of what was published for Segment,"
            " kept with store_outbound_events)",
            {"type": "string", "enum": list(EVENT_DIRECTIONS)},
        ),
        Param("since", "timestamp at or after", DATE),
        Param("until", "timestamp before", DATE),
        *PAGE_PARAMS,
    ),
)
async def list_events(request: AdminRequest) -> Response:
    size, cursor = pagination.limit(request), pagination.decode(request, 2)
    filters = queries.EventFilters(
        **{name: params.text(request, name) for name in FILTERS},
        direction=_direction(request),
        since=params.timestamp(request, "since"),
        until=params.timestamp(request, "until"),
    )
    before = _before(cursor) if cursor else None
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        rows = await queries.list_events(session, env.id, filters, before=before, limit=size + 1)
    items = [EventOut.model_validate(e, from_attributes=True).model_dump(mode="json") for e in rows]
    last = pagination.last_shown(rows, size)
    key = [last.timestamp.isoformat(), last.id] if last else None
    return JSON(pagination.page(items, size, key))


def _direction(request: AdminRequest) -> str | None:
    value = request.query_params.get("direction")
    if value is not None and value not in EVENT_DIRECTIONS:
        raise BadRequest(
            "direction must be inbound or outbound", error="invalid_field", field="direction"
        )
    return value


def _before(cursor: list[object]) -> tuple[datetime, int]:
    """The cursor's (timestamp, id), or 400 if it is not one this API gave out."""
    if not isinstance(cursor[0], str):
        raise pagination.invalid_cursor()
    try:
        at = datetime.fromisoformat(cursor[0])
        at = (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        raise pagination.invalid_cursor() from None
    return at, pagination.row_id(cursor[1])


routes = [Route("/environments/{env_id}/events", list_events, methods=["GET"])]
