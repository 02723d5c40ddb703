"""/api/environments/{id}/quarantine: messages a tracking plan did not fit, kept whole with
their violations; released (stored or sent as they came) or discarded, by ids or a filter."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response
from starlette.routing import Route

from integration.admin import params
from integration.admin.common import AdminRequest, environment, parse_body, unit_of_work
from integration.errors import BadRequest
from integration.http import pagination
from integration.http.openapi import Param, operation
from integration.http.pagination import PAGE_PARAMS
from integration.http.responses import JSON
from integration.inbound import planned
from integration.inbound.digests import InstallKey
from integration.outbound.publish import publish_released
from integration.plans import quarantine
from integration.plans.document import DIRECTIONS
from integration.plans.schemas import (
    QuarantineAction,
    QuarantineDone,
    QuarantinedOut,
    QuarantinePage,
)
from integration.store.db import driver_of
from integration.store.models import Environment, Quarantined

ACTOR = "admin API (ADMIN_TOKEN)"


def _filter(request: AdminRequest) -> quarantine.Filter:
    way = request.query_params.get("direction")
    if way is not None and way not in DIRECTIONS:
        raise BadRequest(
            "direction must be inbound or outbound", error="invalid_field", field="direction"
        )
    return quarantine.Filter(
        direction=way, event=params.text(request, "event"), type=params.text(request, "type")
    )


@operation(
    summary="Quarantined messages, newest first, each whole with its violations",
    scope="read",
    response=QuarantinePage,
    query=(
        Param("direction", "inbound or outbound", {"type": "string", "enum": list(DIRECTIONS)}),
        Param("event", "the event's name"),
        Param("type", "the message's type"),
        *PAGE_PARAMS,
    ),
)
async def list_quarantine(request: AdminRequest) -> Response:
    found, size = _filter(request), pagination.limit(request)
    cursor = pagination.after_id(request)
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        rows = await quarantine.listing(session, env.id, found, before_id=cursor, limit=size + 1)
    items = [QuarantinedOut.of(r).model_dump(mode="json") for r in rows]
    last = pagination.last_shown(rows, size)
    return JSON(pagination.page(items, size, [last.id] if last else None))


def _chosen(body: QuarantineAction) -> quarantine.Filter:
    return quarantine.Filter(
        ids=body.ids, direction=body.direction, event=body.event, type=body.type
    )


def store_or_send(session: AsyncSession, env: Environment, key: InstallKey) -> quarantine.Deliver:
    """Released messages go where they would have gone, past the plan's step (and the mapping:
    they were quarantined as that step saw them): inbound into the store as the webhook's
    group commit stores them, outbound into the outbox as every publish queues them, in this
    transaction, each counted in the ledger."""

    async def deliver(direction: str, rows: list[Quarantined]) -> None:
        if direction == "outbound":
            await publish_released(session, env, [dict(r.message) for r in rows])
            return
        pg = await driver_of(session)
        await planned.store_released(pg, env, rows, key)

    return deliver


@operation(
    summary="Release quarantined messages (ids, else a filter): stored or sent as they came;"
    f" at most {quarantine.MAX_ROWS_PER_CALL} per call",
    body=QuarantineAction,
    body_required=False,
    response=QuarantineDone,
    errors=(401, 404, 409, 413),
)
async def release(request: AdminRequest) -> Response:
    body = await parse_body(request, QuarantineAction, required=False)
    key = InstallKey.of(request.state["settings"])
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        picked = await quarantine.pick(session, env.id, _chosen(body))
        deliver = store_or_send(session, env, key)
        done = await quarantine.release(session, env.id, picked.rows, deliver, actor=ACTOR)
    return JSON(QuarantineDone(done=done, more=picked.more).model_dump(mode="json"))


@operation(
    summary="Discard quarantined messages (ids, else a filter): never stored or sent; at most"
    f" {quarantine.MAX_ROWS_PER_CALL} per call",
    body=QuarantineAction,
    body_required=False,
    response=QuarantineDone,
    errors=(401, 404, 413),
)
async def discard(request: AdminRequest) -> Response:
    body = await parse_body(request, QuarantineAction, required=False)
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        picked = await quarantine.pick(session, env.id, _chosen(body))
        done = await quarantine.discard(session, picked.rows, actor=ACTOR)
    return JSON(QuarantineDone(done=done, more=picked.more).model_dump(mode="json"))


routes = [
    Route("/environments/{env_id}/quarantine", list_quarantine, methods=["GET"]),
    Route("/environments/{env_id}/quarantine/release", release, methods=["POST"]),
    Route("/environments/{env_id}/quarantine/discard", discard, methods=["POST"]),
]
