"""/api/environments/{id}/tracking-plan/{direction}: the plan in force, its versions, a new
version, promotion to another environment, and a draft from what was stored lately."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from integration.admin.common import AdminRequest, environment, parse_body, unit_of_work
from integration.environments import service as environments
from integration.errors import BadRequest, NotFound
from integration.http import pagination
from integration.http.openapi import Param, operation
from integration.http.pagination import PAGE_PARAMS
from integration.http.responses import JSON
from integration.plans import service as plans
from integration.plans import violations
from integration.plans.document import DIRECTIONS, Settings
from integration.plans.schemas import (
    DraftOut,
    PlanOut,
    PlanPage,
    PlanPut,
    PromoteRequest,
    ViolationCount,
    ViolationList,
)

ACTOR = "admin API (ADMIN_TOKEN)"
BASE = "/environments/{env_id}/tracking-plan/{direction}"


def direction(request: AdminRequest) -> str:
    value = str(request.path_params["direction"])
    if value not in DIRECTIONS:
        raise NotFound("the direction is inbound or outbound", error="no_such_direction")
    return value


@operation(
    summary="The tracking plan in force for a direction (404 when there is none)",
    scope="read",
    response=PlanOut,
)
async def read(request: AdminRequest) -> Response:
    way = direction(request)
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        row = await plans.in_force(session, env.id, way)
    return JSON(PlanOut.of(row).model_dump(mode="json"))


@operation(
    summary="Set the tracking plan for a direction: a new version (422 naming the path of a"
    " plan that is not valid)",
    body=PlanPut,
    response=PlanOut,
    errors=(401, 404, 409, 413, 422),
)
async def put(request: AdminRequest) -> Response:
    way = direction(request)
    body = await parse_body(request, PlanPut)
    settings = Settings(
        unplanned_event=body.unplanned_event, unplanned_property=body.unplanned_property
    )
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        row = await plans.save(session, env.id, way, body.plan, settings, created_by=ACTOR)
    return JSON(PlanOut.of(row).model_dump(mode="json"))


@operation(
    summary="The tracking plan's versions, newest first",
    scope="read",
    response=PlanPage,
    query=PAGE_PARAMS,
)
async def versions(request: AdminRequest) -> Response:
    way, size = direction(request), pagination.limit(request)
    cursor = pagination.decode(request, 1)
    below = None if cursor is None else pagination.row_id(cursor[0])
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        rows = await plans.versions(session, env.id, way, below=below, limit=size + 1)
    items = [PlanOut.of(r).model_dump(mode="json") for r in rows]
    last = pagination.last_shown(rows, size)
    return JSON(pagination.page(items, size, [last.version] if last else None))


@operation(
    summary="Copy the plan in force, with its settings, to another environment as its next"
    " version (staging to production)",
    body=PromoteRequest,
    response=PlanOut,
    errors=(401, 404, 409, 413),
)
async def promote(request: AdminRequest) -> Response:
    way = direction(request)
    body = await parse_body(request, PromoteRequest)
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        target = await environments.get(session, body.to)
        row = await plans.promote(session, env.id, target.id, way, created_by=ACTOR)
    return JSON(PlanOut.of(row).model_dump(mode="json"))


DAYS = Param(
    "days",
    f"draft from the messages stored in this many days, 1 to {plans.MAX_DRAFT_DAYS} (default 7)",
    {"type": "integer", "minimum": 1, "maximum": plans.MAX_DRAFT_DAYS},
)


def _days(request: AdminRequest) -> int:
    raw = request.query_params.get("days", "7")
    if not raw.isascii() or not raw.isdigit():
        raise BadRequest(
            f"days must be a whole number from 1 to {plans.MAX_DRAFT_DAYS}",
            error="invalid_field",
            field="days",
        )
    return int(raw)


@operation(
    summary="Draft a plan from the events stored in the last N days, for a person to edit;"
    " nothing is saved",
    scope="read",
    response=DraftOut,
    query=(DAYS,),
)
async def draft(request: AdminRequest) -> Response:
    way, days = direction(request), _days(request)
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        drafted = await plans.draft_from_events(session, env.id, way, days)
    return JSON(DraftOut(direction=way, days=days, plan=drafted).model_dump(mode="json"))


@operation(
    summary="The plan's violations by event, property and rule, with counts and the latest"
    " value at fault, the most frequent first",
    scope="read",
    response=ViolationList,
)
async def list_violations(request: AdminRequest) -> Response:
    way = direction(request)
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        rows = await violations.summary(session, env.id, way)
    found = ViolationList(items=[ViolationCount.of(r) for r in rows])
    return JSON(found.model_dump(mode="json"))


routes = [
    Route(BASE, read, methods=["GET"]),
    Route(BASE, put, methods=["PUT"]),
    Route(BASE + "/versions", versions, methods=["GET"]),
    Route(BASE + "/promote", promote, methods=["POST"]),
    Route(BASE + "/draft", draft, methods=["POST"]),
    Route(BASE + "/violations", list_violations, methods=["GET"]),
]
