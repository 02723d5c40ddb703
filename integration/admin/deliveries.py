"""/api/environments/{id}/deliveries: the outbox as an operator sees it, and replay."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from integration.admin import pagination
from integration.admin.common import AdminRequest, environment, parse_body, unit_of_work
from integration.admin.pagination import PAGE_PARAMS
from integration.admin.schemas import Delivery, DeliveryPage, Replayed, ReplayRequest
from integration.errors import BadRequest
from integration.http.openapi import Param, operation
from integration.http.responses import JSON
from integration.outbound import outbox
from integration.store.models import DELIVERY_STATUSES


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
    return JSON(pagination.page(items, size, [rows[size - 1].id] if len(rows) > size else None))


@operation(
    summary="Re-queue dead deliveries (all, or the given ids / message_ids)",
    body=ReplayRequest,
    body_required=False,
    response=Replayed,
    errors=(401, 404, 413),
)
async def replay(request: AdminRequest) -> Response:
    """Re-queue dead deliveries (all, or the given ids / messageIds) with a fresh retry budget."""
    body = await parse_body(request, ReplayRequest, required=False)
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        replayed = await outbox.replay(session, env.id, ids=body.ids, message_ids=body.message_ids)
    return JSON(Replayed(replayed=replayed).model_dump(mode="json"))


routes = [
    Route("/environments/{env_id}/deliveries", list_deliveries, methods=["GET"]),
    Route("/environments/{env_id}/deliveries/replay", replay, methods=["POST"]),
]
