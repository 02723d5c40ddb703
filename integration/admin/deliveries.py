"""/api/environments/{id}/deliveries: the outbox as an operator sees it, and replay."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response
from starlette.routing import Route

from integration.admin.common import AdminRequest, environment, parse_body, unit_of_work
from integration.admin.schemas import (
    Delivery,
    DeliveryPage,
    Replayed,
    ReplayRecord,
    ReplayRecordPage,
    ReplayRequest,
    ReplaySample,
)
from integration.errors import BadRequest
from integration.http import pagination
from integration.http.openapi import Param, operation
from integration.http.pagination import PAGE_PARAMS
from integration.http.responses import JSON
from integration.outbound import outbox
from integration.store.models import DELIVERY_STATUSES, OutboxMessage


def _status(request: AdminRequest) -> str | None:
    status = request.query_params.get("status")
    if status is not None and status not in DELIVERY_STATUSES:
        raise BadRequest(
            f"status must be one of {', '.join(DELIVERY_STATUSES)}",
            error="invalid_field",
            field="status",
        )
    return status


@operation(
    summary="List outbound deliveries, newest first",
    scope="read",
    response=DeliveryPage,
    query=(
        Param(
            "status",
            "pending, delivered or dead",
            {"type": "string", "enum": list(DELIVERY_STATUSES)},
        ),
        *PAGE_PARAMS,
    ),
)
async def list_deliveries(request: AdminRequest) -> Response:
    status, size = _status(request), pagination.limit(request)
    cursor = pagination.after_id(request)
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        rows = await outbox.list_deliveries(
            session, env.id, status=status, before_id=cursor, limit=size + 1
        )
    items = [Delivery.of(r).model_dump(mode="json") for r in rows]
    last = pagination.last_shown(rows, size)
    return JSON(pagination.page(items, size, [last.id] if last else None))


def parse_when(value: str | None, name: str) -> datetime | None:
    """An ISO-8601 time a caller gave (UTC when it names no zone), or a 400 naming it."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(
            f"{name} must be an ISO-8601 date-time", error="invalid_field", field=name
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def replay_filter(body: ReplayRequest) -> outbox.ReplayFilter:
    return outbox.ReplayFilter(
        status=body.status,
        since=parse_when(body.from_, "from"),
        until=parse_when(body.to, "to"),
        event=body.event,
        type=body.type,
        user_id=body.user_id,
        ids=body.ids,
        message_ids=body.message_ids,
    )


def _sample(row: OutboxMessage) -> ReplaySample:
    return ReplaySample(
        id=row.id,
        message_id=row.message_id,
        type=row.type,
        event=row.payload.get("event"),
        user_id=row.payload.get("userId"),
        created_at=row.created_at,
        response_status=row.response_status,
    )


async def replay_by(
    session: AsyncSession, env_id: uuid.UUID, body: ReplayRequest, *, actor: str
) -> Replayed:
    """A replay (or its dry run) as the API, the console and the CLI all answer it."""
    done = await outbox.replay_filtered(
        session, env_id, replay_filter(body), dry_run=body.dry_run, actor=actor
    )
    return Replayed(
        replayed=0 if done.dry_run else done.queued,
        queued=done.queued,
        matched=done.matched,
        dry_run=done.dry_run,
        limit=done.limit,
        more=done.more,
        sample=[_sample(r) for r in done.sample],
    )


@operation(
    summary="Re-queue deliveries by a filter (dead by default; delivered to re-send), or count"
    " them with dry_run; at most REPLAY_MAX_ROWS (1,000) per call",
    body=ReplayRequest,
    body_required=False,
    response=Replayed,
    errors=(401, 404, 413),
)
async def replay(request: AdminRequest) -> Response:
    """Re-queue the deliveries a filter matches (oldest first, their messageIds kept) with a
    fresh retry budget, recording who asked; with `dry_run`, only count and sample them."""
    body = await parse_body(request, ReplayRequest, required=False)
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        done = await replay_by(session, env.id, body, actor="admin API (ADMIN_TOKEN)")
    return JSON(done.model_dump(mode="json"))


@operation(
    summary="The record of replays, newest first: who replayed, with which filter, how many"
    " rows it queued (dry runs change nothing and are not recorded)",
    scope="read",
    response=ReplayRecordPage,
    query=PAGE_PARAMS,
)
async def list_replays(request: AdminRequest) -> Response:
    size, cursor = pagination.limit(request), pagination.after_id(request)
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        rows = await outbox.list_replays(session, env.id, before_id=cursor, limit=size + 1)
    items = [
        ReplayRecord.model_validate(r, from_attributes=True).model_dump(mode="json") for r in rows
    ]
    last = pagination.last_shown(rows, size)
    return JSON(pagination.page(items, size, [last.id] if last else None))


routes = [
    Route("/environments/{env_id}/deliveries", list_deliveries, methods=["GET"]),
    Route("/environments/{env_id}/replays", list_replays, methods=["GET"]),
    Route("/environments/{env_id}/deliveries/replay", replay, methods=["POST"]),
]
