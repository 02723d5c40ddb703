"""/api/environments: create, list, read, change, rotate keys, test the Segment connection."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import exists, select
from starlette.responses import Response
from starlette.routing import Route

from integration.admin.common import (
    AdminRequest,
    environment,
    json_object,
    optional_json_object,
    unit_of_work,
)
from integration.admin.schemas import (
    MAX_GRACE_SECONDS,
    ConnectionTest,
    EnvironmentCreate,
    EnvironmentOut,
    EnvironmentPage,
    EnvironmentSettings,
    EnvironmentWithKey,
    RotateRequest,
)
from integration.environments import service
from integration.errors import BadRequest, Conflict
from integration.http.openapi import Param, operation
from integration.http.responses import JSON
from integration.outbound.catalogue import WEBHOOK_KEY_ROTATED, emit
from integration.outbound.connection import test_connection
from integration.store.models import Environment, Event, OutboxMessage, User

# Each setting's JSON type; the secrets may also be null, which clears them.
SETTINGS: dict[str, type] = {
    "segment_write_key": str,
    "stream_enabled": bool,
    "company_property": str,
    "webhook_signing_secret": str,
    "segment_api_url": str,
}
CLEARABLE = ("segment_write_key", "webhook_signing_secret")


def _view(request: AdminRequest, env: Environment) -> EnvironmentOut:
    return EnvironmentOut(**service.describe(env, request.state["box"]))


def _with_key(request: AdminRequest, env: Environment, key: str) -> EnvironmentWithKey:
    return EnvironmentWithKey(
        **service.describe(env, request.state["box"]),
        webhook_key=key,
        webhook_url=request.state["settings"].webhook_url(key),
        previous_key_valid_until=env.previous_webhook_key_expires_at,
    )


@operation(
    summary="Create an environment; its webhook key is shown in full only here",
    body=EnvironmentCreate,
    response=EnvironmentWithKey,
    status=201,
    errors=(401, 409),
)
async def create(request: AdminRequest) -> Response:
    body = await json_object(request)
    name = body.get("name")
    if not isinstance(name, str) or not _clean(name):
        raise BadRequest(
            "name is required and must be a string without surrounding whitespace",
            error="invalid_field",
            field="name",
        )
    settings = _only_settings({k: v for k, v in body.items() if k != "name"})
    async with unit_of_work(request) as session:
        created = await service.create(session, name)
        if settings:
            await service.change_settings(
                session,
                created.environment,
                request.state["box"],
                settings,
                allowlist=request.state["settings"].segment_api_hosts,
            )
            # The update expired the server-set updated_at: load it before the session ends.
            await session.refresh(created.environment)
    view = _with_key(request, created.environment, created.webhook_key)
    return JSON(view.model_dump(mode="json"), status_code=201)


def _only_settings(body: dict[str, Any]) -> dict[str, Any]:
    """Known settings of the right JSON type; the service checks their values."""
    unknown = sorted(set(body) - set(SETTINGS))
    if unknown:
        raise BadRequest(
            f"unknown field {unknown[0]!r}; settings are {', '.join(SETTINGS)}",
            error="invalid_field",
            field=unknown[0],
        )
    for name, value in body.items():
        if value is None and name in CLEARABLE:
            continue
        if not isinstance(value, SETTINGS[name]) or (isinstance(value, str) and not _clean(value)):
            kind = (
                "true or false"
                if SETTINGS[name] is bool
                else "a string without NUL or surrounding whitespace"
            )
            raise BadRequest(f"{name} must be {kind}", error="invalid_field", field=name)
        if name == "segment_api_url" and isinstance(value, str) and not _splits(value):
            raise BadRequest(
                "segment_api_url must be an http(s) URL, or 'us' or 'eu'",
                error="invalid_field",
                field=name,
            )
    return body


def _clean(value: str) -> bool:
    # The service's patterns end in `$`, which also matches before a final newline.
    return "\x00" not in value and value == value.strip()


def _splits(url: str) -> bool:
    try:
        urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return False
    return True


@operation(summary="List environments (secrets masked)", response=EnvironmentPage, errors=(401,))
async def list_(request: AdminRequest) -> Response:
    async with unit_of_work(request) as session:
        envs = await service.list_all(session)
    page = EnvironmentPage(items=[_view(request, e) for e in envs], next_cursor=None)
    return JSON(page.model_dump(mode="json"))


@operation(summary="Read an environment (secrets masked)", response=EnvironmentOut)
async def read(request: AdminRequest) -> Response:
    async with unit_of_work(request) as session:
        env = await environment(session, request)
    return JSON(_view(request, env).model_dump(mode="json"))


@operation(
    summary="Change settings: write key, stream switch, company property, signing "
    "secret, Segment API URL",
    body=EnvironmentSettings,
    response=EnvironmentOut,
)
async def patch(request: AdminRequest) -> Response:
    changes = _only_settings(await json_object(request))
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        await service.change_settings(
            session,
            env,
            request.state["box"],
            changes,
            allowlist=request.state["settings"].segment_api_hosts,
        )
        await session.refresh(env)  # updated_at is set by the database and expired by the flush
    return JSON(_view(request, env).model_dump(mode="json"))


@operation(
    summary="Delete an environment; refused while it holds data unless force=true",
    response=None,
    status=204,
    errors=(401, 404, 409),
    query=(Param("force", "delete with all its data", {"type": "boolean"}),),
)
async def delete(request: AdminRequest) -> Response:
    force = request.query_params.get("force", "false").lower() in ("1", "true", "yes")
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        if not force:
            for model in (User, Event, OutboxMessage):
                held = await session.scalar(select(exists().where(model.environment_id == env.id)))
                if held:
                    raise Conflict(
                        "the environment holds data; add ?force=true to delete it "
                        "with all its data",
                        error="environment_not_empty",
                    )
        await session.delete(env)
    return Response(status_code=204)


GRACE = Param(
    "grace_seconds",
    "how long the old key keeps working (0 revokes it at once); default "
    "WEBHOOK_KEY_GRACE_SECONDS. Also accepted in the body.",
    {"type": "integer", "minimum": 0, "maximum": MAX_GRACE_SECONDS},
)


@operation(
    summary="Rotate the webhook key; the old one works for a grace period (0: revoked at once)",
    response=EnvironmentWithKey,
    body=RotateRequest,
    body_required=False,
    query=(GRACE,),
    errors=(401, 404, 413),
)
async def rotate(request: AdminRequest) -> Response:
    grace = _grace(request, await optional_json_object(request))
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        key = await service.rotate_webhook_key(session, env, grace_seconds=grace)
        await emit(session, env, WEBHOOK_KEY_ROTATED, grace_seconds=grace)
        await session.refresh(env)  # updated_at is set by the database and expired by the flush
    return JSON(_with_key(request, env, key).model_dump(mode="json"))


def _grace(request: AdminRequest, body: dict[str, Any]) -> int:
    """The grace period asked for (query or body, not both), else the configured default."""
    unknown = sorted(set(body) - {"grace_seconds"})
    if unknown:
        raise BadRequest(
            f"unknown field {unknown[0]!r}; the body may give grace_seconds",
            error="invalid_field",
            field=unknown[0],
        )
    query = request.query_params.get("grace_seconds")
    if query is not None and "grace_seconds" in body:
        raise BadRequest(
            "give grace_seconds in the query or the body, not both",
            error="invalid_field",
            field="grace_seconds",
        )
    value: Any = body.get("grace_seconds")
    if query is not None:
        value = int(query) if query.isascii() and query.isdigit() else query
    if value is None:
        return int(request.state["settings"].webhook_key_grace_seconds)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_GRACE_SECONDS:
        raise BadRequest(
            f"grace_seconds must be a whole number of seconds from 0 to {MAX_GRACE_SECONDS}",
            error="invalid_field",
            field="grace_seconds",
        )
    return value


@operation(summary="Send one test event to Segment and report its answer", response=ConnectionTest)
async def test(request: AdminRequest) -> Response:
    async with unit_of_work(request) as session:
        env = await environment(session, request)
    state = request.state
    result = await test_connection(env, state["box"], state["http"], state["settings"])
    return JSON(ConnectionTest(**result.as_dict()).model_dump(mode="json"))


routes = [
    Route("/environments", create, methods=["POST"]),
    Route("/environments", list_, methods=["GET"]),
    Route("/environments/{env_id}", read, methods=["GET"]),
    Route("/environments/{env_id}", patch, methods=["PATCH"]),
    Route("/environments/{env_id}", delete, methods=["DELETE"]),
    Route("/environments/{env_id}/rotate-webhook-key", rotate, methods=["POST"]),
    Route("/environments/{env_id}/test-connection", test, methods=["POST"]),
]
