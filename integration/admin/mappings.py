"""/api/environments/{id}/mappings/{direction}: an environment's mapping for inbound or
outbound messages (integration/environments/mappings.py): read it and its versions, change
it (422 naming where a definition is wrong), go back one version, promote it to another
environment, and preview what it makes of a sample message."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from integration.admin.common import AdminRequest, environment, parse_body, unit_of_work
from integration.environments import mappings
from integration.environments.schemas import (
    MappingOut,
    MappingPreview,
    MappingPreviewRequest,
    MappingPut,
    MappingVersionPage,
)
from integration.errors import BadRequest
from integration.http.openapi import Param, operation
from integration.http.responses import JSON


def _direction(request: AdminRequest) -> str:
    return mappings.check_direction(request.path_params["direction"])


def _answer(row: MappingOut) -> Response:
    return JSON(row.model_dump(mode="json"))


@operation(summary="The current mapping of one direction", scope="read", response=MappingOut)
async def read(request: AdminRequest) -> Response:
    direction = _direction(request)
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        row = await mappings.current(session, env, direction)
    return _answer(mappings.describe(row))


@operation(
    summary="Change the mapping of one direction: checked, then stored as the next version"
    " (422 names where the mapping or trigger is wrong)",
    body=MappingPut,
    response=MappingOut,
    errors=(401, 404, 409, 413, 422),
)
async def put(request: AdminRequest) -> Response:
    direction = _direction(request)
    body = await parse_body(request, MappingPut)
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        row = await mappings.change(
            session, env, direction, trigger=body.trigger, mapping=body.mapping
        )
    return _answer(mappings.describe(row))


@operation(
    summary="Every version of the mapping of one direction, newest first",
    scope="read",
    response=MappingVersionPage,
)
async def versions(request: AdminRequest) -> Response:
    direction = _direction(request)
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        rows = await mappings.history(session, env, direction)
        page = MappingVersionPage(items=[mappings.describe(r) for r in rows], next_cursor=None)
    return JSON(page.model_dump(mode="json"))


@operation(
    summary="Go back one version: the version before the current one becomes current again"
    " (as a new version)",
    response=MappingOut,
    errors=(401, 404, 409),
)
async def revert(request: AdminRequest) -> Response:
    direction = _direction(request)
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        row = await mappings.revert(session, env, direction)
    return _answer(mappings.describe(row))


TO = Param("to", "the environment to promote to: its name or id", required=True)


@operation(
    summary="Promote the current mapping of one direction to another environment, where it"
    " becomes the next version",
    response=MappingOut,
    query=(TO,),
    errors=(401, 404, 409),
)
async def promote(request: AdminRequest) -> Response:
    direction = _direction(request)
    to = request.query_params.get("to", "")
    if not to:
        raise BadRequest(
            "give the environment to promote to: ?to=<name or id>",
            error="invalid_field",
            field="to",
        )
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        row = await mappings.promote(session, env, direction, to)
    return _answer(mappings.describe(row))


@operation(
    summary="What the current mapping (or one given) makes of a sample message; nothing is"
    " saved or sent",
    scope="read",
    body=MappingPreviewRequest,
    response=MappingPreview,
    errors=(401, 404, 413, 422),
)
async def preview(request: AdminRequest) -> Response:
    direction = _direction(request)
    body = await parse_body(request, MappingPreviewRequest)
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        result = await mappings.preview(
            session, env, direction, body.message, trigger=body.trigger, mapping=body.mapping
        )
    return JSON(result.model_dump(mode="json"))


routes = [
    Route("/environments/{env_id}/mappings/{direction}", read, methods=["GET"]),
    Route("/environments/{env_id}/mappings/{direction}", put, methods=["PUT"]),
    Route("/environments/{env_id}/mappings/{direction}/versions", versions, methods=["GET"]),
    Route("/environments/{env_id}/mappings/{direction}/revert", revert, methods=["POST"]),
    Route("/environments/{env_id}/mappings/{direction}/promote", promote, methods=["POST"]),
    Route("/environments/{env_id}/mappings/{direction}/preview", preview, methods=["POST"]),
]
