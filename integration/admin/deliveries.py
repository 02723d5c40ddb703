"""/api/environments/{id}/deliveries: the outbox as an operator sees it, and replay."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from starlette.responses import Response
from starlette.routing import Route

from integration.admin import pagination
from integration.admin.common import AdminRequest, environment, optional_json_object, unit_of_work
from integration.admin.pagination import MAX_ROW_ID, PAGE_PARAMS
from integration.admin.schemas import Delivery, DeliveryPage, Replayed, ReplayRequest
from integration.errors import BadRequest
from integration.http.openapi import Param, operation
from integration.http.responses import JSON
from integration.outbound.jobs import wake_delivery
from integration.store.models import DELIVERY_STATUSES, OutboxMessage


def _view(row: OutboxMessage) -> dict[str, Any]:
    return Delivery(
        id=row.id,
        message_id=row.message_id,
        type=row.type,
        status=row.status,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at if row.status == "pending" else None,
        last_error=row.last_error,
        response_status=row.response_status,
        response_body=row.response_body,
        created_at=row.created_at,
        delivered_at=row.delivered_at,
        payload=row.payload,
    ).model_dump(mode="json")


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
async def list_(request: AdminRequest) -> Response:
    status, size = _status(request), pagination.limit(request)
    cursor = pagination.after_id(request)
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        stmt = select(OutboxMessage).where(OutboxMessage.environment_id == env.id)
        if status:
            stmt = stmt.where(OutboxMessage.status == status)
        if cursor:
            stmt = stmt.where(OutboxMessage.id < cursor)
        rows = list(await session.scalars(stmt.order_by(OutboxMessage.id.desc()).limit(size + 1)))
    items = [_view(r) for r in rows]
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
    body = await optional_json_object(request)
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        stmt = (
            update(OutboxMessage)
            .where(OutboxMessage.environment_id == env.id, OutboxMessage.status == "dead")
            .values(
                status="pending",
                next_attempt_at=func.now(),
                replayed_at=func.now(),
                attempts=0,
                updated_at=func.now(),
            )
        )
        stmt = _select_rows(stmt, body)
        result = await session.execute(stmt.returning(OutboxMessage.id))
        replayed = len(result.all())
        if replayed:
            wake_delivery(session, env.id)
    return JSON({"replayed": replayed})


def _is_row_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_ROW_ID


def _select_rows(stmt: Any, body: dict[str, Any]) -> Any:
    # A misspelt filter must not widen the replay to every dead delivery.
    unknown = sorted(set(body) - {"ids", "message_ids"})
    if unknown:
        raise BadRequest(
            f"unknown field {unknown[0]!r}; give ids or message_ids, or no body",
            error="invalid_field",
            field=unknown[0],
        )
    ids, message_ids = body.get("ids"), body.get("message_ids")
    if ids is not None:
        if not isinstance(ids, list) or not all(_is_row_id(i) for i in ids):
            raise BadRequest(
                "ids must be an array of delivery ids", error="invalid_field", field="ids"
            )
        stmt = stmt.where(OutboxMessage.id.in_(ids))
    if message_ids is not None:
        if not isinstance(message_ids, list) or not all(
            isinstance(i, str) and "\x00" not in i for i in message_ids
        ):
            raise BadRequest(
                "message_ids must be an array of strings (without NUL)",
                error="invalid_field",
                field="message_ids",
            )
        stmt = stmt.where(OutboxMessage.message_id.in_(message_ids))
    return stmt


routes = [
    Route("/environments/{env_id}/deliveries", list_, methods=["GET"]),
    Route("/environments/{env_id}/deliveries/replay", replay, methods=["POST"]),
]
