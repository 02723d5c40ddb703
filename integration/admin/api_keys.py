"""/api/environments/{id}/api-keys: an environment's scoped API keys (admin token only)."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from integration.admin.common import AdminRequest, environment, parse_body, unit_of_work
from integration.environments import api_keys
from integration.environments.schemas import ApiKeyCreate, ApiKeyPage, ApiKeyWithSecret
from integration.http.openapi import operation
from integration.http.responses import JSON


@operation(
    summary="Create an API key with scopes (publish, read); the key is shown only here",
    body=ApiKeyCreate,
    response=ApiKeyWithSecret,
    status=201,
    errors=(401, 404, 409, 413),
)
async def create(request: AdminRequest) -> Response:
    body = await parse_body(request, ApiKeyCreate)
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        created = await api_keys.create(session, env, body)
    return JSON(created.model_dump(mode="json"), status_code=201)


@operation(summary="List an environment's API keys (hints, never the keys)", response=ApiKeyPage)
async def list_keys(request: AdminRequest) -> Response:
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        keys = await api_keys.list_for(session, env)
    page = ApiKeyPage(items=[api_keys.describe(k) for k in keys], next_cursor=None)
    return JSON(page.model_dump(mode="json"))


@operation(
    summary="Revoke an API key (by id or name): it stops working at once",
    response=None,
    status=204,
)
async def revoke(request: AdminRequest) -> Response:
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        await api_keys.revoke(session, env, request.path_params["key_id"])
    return Response(status_code=204)


routes = [
    Route("/environments/{env_id}/api-keys", create, methods=["POST"]),
    Route("/environments/{env_id}/api-keys", list_keys, methods=["GET"]),
    Route("/environments/{env_id}/api-keys/{key_id}", revoke, methods=["DELETE"]),
]
