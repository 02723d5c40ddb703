"""/api/environments/{id}/identity-conflicts: the links and merges ingest refused (issue #25),
listed newest first, and applied or dismissed by an operator."""

from __future__ import annotations

from typing import Any, Final

from starlette.responses import Response
from starlette.routing import Route

from integration.admin.common import AdminRequest, environment, unit_of_work
from integration.admin.schemas import IdentityConflictOut, IdentityConflictPage
from integration.errors import BadRequest
from integration.http import pagination
from integration.http.openapi import Param, operation
from integration.http.pagination import PAGE_PARAMS
from integration.http.responses import JSON
from integration.inbound import conflicts
from integration.store.models import CONFLICT_STATES, IdentityConflict

ACTOR: Final = "admin API (ADMIN_TOKEN)"


def _state(request: AdminRequest) -> str | None:
    state = request.query_params.get("state")
    if state is not None and state not in CONFLICT_STATES:
        raise BadRequest(
            f"state must be one of {', '.join(CONFLICT_STATES)}",
            error="invalid_field",
            field="state",
        )
    return state


@operation(
    summary="Identity conflicts (links and merges refused at ingest), newest first",
    scope="read",
    response=IdentityConflictPage,
    query=(
        Param(
            "state",
            "open, applied or dismissed",
            {"type": "string", "enum": list(CONFLICT_STATES)},
        ),
        *PAGE_PARAMS,
    ),
)
async def list_conflicts(request: AdminRequest) -> Response:
    state, size = _state(request), pagination.limit(request)
    cursor = pagination.after_id(request)
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        rows = await conflicts.listing(session, env.id, state, before_id=cursor, limit=size + 1)
    items = [_view(r) for r in rows]
    last = pagination.last_shown(rows, size)
    return JSON(pagination.page(items, size, [last.id] if last else None))


def _view(row: IdentityConflict) -> dict[str, Any]:
    return IdentityConflictOut.model_validate(row, from_attributes=True).model_dump(mode="json")


@operation(
    summary="Apply an identity conflict: make the link or merge its message asked for (logged"
    " with rule operator); applied already: the same answer; dismissed: 409",
    response=IdentityConflictOut,
    errors=(401, 404, 409),
)
async def apply(request: AdminRequest) -> Response:
    conflict_id = conflicts.conflict_id(request.path_params["conflict_id"])
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        await conflicts.apply(session, env.id, conflict_id, ACTOR)
        done = _view(await conflicts.one(session, env.id, conflict_id))
    return JSON(done)


@operation(
    summary="Dismiss an identity conflict: nothing changes; dismissed already: the same answer;"
    " applied: 409",
    response=IdentityConflictOut,
    errors=(401, 404, 409),
)
async def dismiss(request: AdminRequest) -> Response:
    conflict_id = conflicts.conflict_id(request.path_params["conflict_id"])
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        await conflicts.dismiss(session, env.id, conflict_id, ACTOR)
        done = _view(await conflicts.one(session, env.id, conflict_id))
    return JSON(done)


routes = [
    Route("/environments/{env_id}/identity-conflicts", list_conflicts, methods=["GET"]),
    Route("/environments/{env_id}/identity-conflicts/{conflict_id}/apply", apply, methods=["POST"]),
    Route(
        "/environments/{env_id}/identity-conflicts/{conflict_id}/dismiss",
        dismiss,
        methods=["POST"],
    ),
]
