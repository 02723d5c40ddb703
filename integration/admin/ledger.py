"""/api/environments/{id}/ledger and /messages/{messageId}: what came in and went out, counted
so that the sums hold, and the lifecycle of any one message."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response
from starlette.routing import Route

from integration.admin import params
from integration.admin.common import AdminRequest, environment, unit_of_work
from integration.admin.schemas import LedgerOut, MessageTrace
from integration.errors import BadRequest, NotFound
from integration.http.openapi import Param, operation
from integration.http.responses import JSON
from integration.inbound import queries
from integration.outbound import outbox
from integration.plans import quarantine
from integration.store import activity
from integration.store.models import Environment

DIRECTIONS = ("inbound", "outbound")
BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)
END = datetime(9999, 1, 1, tzinfo=UTC)
BAD_KEY_NOTE = (
    "requests with an unknown webhook key name no environment: they are counted install-wide"
    ' on /metrics (integration_inbound_ledger_total{outcome="refused_bad_key"}), not here'
)


def direction(request: AdminRequest) -> str | None:
    value = request.query_params.get("direction")
    if value is not None and value not in DIRECTIONS:
        raise BadRequest(
            "direction must be inbound or outbound", error="invalid_field", field="direction"
        )
    return value


def window(since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
    """The window on the counts' grain (minutes; days once folded), `to` excluded."""
    now = datetime.now(UTC)
    start = activity.window_edge(since, now) if since else BEGINNING
    end = activity.window_edge(until, now) if until else END
    if end < start:
        raise BadRequest("to must not be before from", error="invalid_field", field="to")
    return start, end


async def collect(
    session: AsyncSession,
    env: Environment,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    only: str | None = None,
) -> dict[str, Any]:
    """The ledger of an environment over a window (the CLI's `stats` and the console read it
    too)."""
    start, end = window(since, until)
    out: dict[str, Any] = {
        "from": start.isoformat() if since else None,
        "to": end.isoformat() if until else None,
    }
    if only in (None, "inbound"):
        out["inbound"] = await activity.inbound_ledger(session, env.id, start, end)
        out["inbound"]["note"] = BAD_KEY_NOTE
    if only in (None, "outbound"):
        streaming = env.stream_enabled and env.segment_write_key is not None
        found = await outbox.ledger(session, env.id, since=start, until=end, streaming=streaming)
        out["outbound"] = found.as_dict()
    return out


@operation(
    summary="The ledger: messages received and what became of them, and messages accepted for"
    " Segment and what became of them; the sums hold exactly",
    scope="read",
    response=LedgerOut,
    query=(
        Param("from", "start of the window (ISO-8601), on the counts' grain", {"type": "string"}),
        Param("to", "end of the window (excluded)", {"type": "string"}),
        Param("direction", "inbound or outbound (default both)", {"enum": list(DIRECTIONS)}),
    ),
)
async def ledger(request: AdminRequest) -> Response:
    since, until = params.timestamp(request, "from"), params.timestamp(request, "to")
    only = direction(request)
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        found = await collect(session, env, since=since, until=until, only=only)
    return JSON(found)


async def trace(
    session: AsyncSession, env: Environment, message_id: str, only: str | None = None
) -> dict[str, Any]:
    """The lifecycle of a message, oldest first, and where it stands in each direction; 404
    when neither direction holds it (never received, refused, or its person erased)."""
    steps: list[dict[str, Any]] = []
    states: dict[str, str] = {}
    if only in (None, "inbound"):
        found = await queries.inbound_trace(session, env.id, message_id)
        if found is not None:
            steps += queries.inbound_steps(found)
            states["inbound"] = "stored"
    if only in (None, "outbound") and "\x00" not in message_id:
        sent = await outbox.trace(session, env.id, message_id)
        if sent is not None:
            streaming = env.stream_enabled and env.segment_write_key is not None
            more, states["outbound"] = outbox.outbound_steps(sent, streaming=streaming)
            steps += more
    if "\x00" not in message_id:
        for row in await quarantine.trace(session, env.id, message_id, only):
            more, state = quarantine.steps(row)
            steps[:0] = more  # first: a release and its store share a time
            if state is not None:
                states.setdefault(row.direction, state)
    if not states:
        raise NotFound("no message with this messageId is held", error="message_not_found")
    steps.sort(key=lambda s: s["at"] or "")
    return {"message_id": message_id, "state": states, "lifecycle": steps}


@operation(
    summary="A message's lifecycle, oldest first: received, redelivered, what it changed;"
    " accepted, each delivery attempt with Segment's status, delivered or dead",
    scope="read",
    response=MessageTrace,
    query=(Param("direction", "inbound or outbound (default both)", {"enum": list(DIRECTIONS)}),),
    errors=(401, 404),
)
async def message(request: AdminRequest) -> Response:
    only = direction(request)
    message_id = request.path_params["message_id"]
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        found = await trace(session, env, message_id, only)
    return JSON(found)


routes = [
    Route("/environments/{env_id}/ledger", ledger, methods=["GET"]),
    # A messageId is any string its sender chose, slashes included (a URL, a path): it is the
    # rest of the path, sent percent-encoded.
    Route("/environments/{env_id}/messages/{message_id:path}", message, methods=["GET"]),
]
