"""/api/environments: create, list, read, change, rotate keys (the webhook key, the intake write
key of our /v1 intake), test the Segment connection."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response
from starlette.routing import Route

from integration.admin.common import AdminRequest, environment, parse_body, unit_of_work
from integration.admin.schemas import ConnectionTest
from integration.environments import service as environments
from integration.environments.schemas import (
    MAX_GRACE_SECONDS,
    EnvironmentCreate,
    EnvironmentCreated,
    EnvironmentOut,
    EnvironmentPage,
    EnvironmentSettings,
    EnvironmentWithKey,
    EnvironmentWithSourceKey,
    RotateRequest,
)
from integration.errors import BadRequest
from integration.http.openapi import Param, operation
from integration.http.responses import JSON
from integration.outbound import events
from integration.outbound.connection import test_connection
from integration.store.models import Environment


async def _view(request: AdminRequest, session: AsyncSession, env: Environment) -> EnvironmentOut:
    previous = (await environments.previous_keys(session, [env.id]))[env.id]
    return environments.describe(env, request.state["box"], previous=previous)


async def _with_key(
    request: AdminRequest,
    session: AsyncSession,
    env: Environment,
    key: str,
    replaced_until: datetime | None = None,
) -> EnvironmentWithKey:
    return EnvironmentWithKey(
        **(await _view(request, session, env)).model_dump(),
        webhook_key=key,
        webhook_url=request.state["settings"].webhook_url(key),
        previous_key_valid_until=replaced_until,
    )


@operation(
    summary="Create an environment; its webhook key and intake write key are shown in full only"
    " here",
    body=EnvironmentCreate,
    response=EnvironmentCreated,
    status=201,
    errors=(401, 409),
)
async def create(request: AdminRequest) -> Response:
    body = await parse_body(request, EnvironmentCreate)
    async with unit_of_work(request) as session:
        created = await environments.create(session, body.name)
        if changes := body.changes():
            await events.change_settings(
                session,
                created.environment,
                request.state["box"],
                changes,
                allowlist=request.state["settings"].segment_api_hosts,
            )
            # The update expired the server-set updated_at: load it before the session ends.
            await session.refresh(created.environment)
        view = EnvironmentCreated(
            **(
                await _with_key(request, session, created.environment, created.webhook_key)
            ).model_dump(),
            source_write_key=created.source_write_key,
        )
    return JSON(view.model_dump(mode="json"), status_code=201)


@operation(summary="List environments (secrets masked)", response=EnvironmentPage, errors=(401,))
async def list_environments(request: AdminRequest) -> Response:
    async with unit_of_work(request) as session:
        envs = await environments.list_all(session)
        previous = await environments.previous_keys(session, [e.id for e in envs])
    box = request.state["box"]
    items = [environments.describe(e, box, previous=previous[e.id]) for e in envs]
    page = EnvironmentPage(items=items, next_cursor=None)
    return JSON(page.model_dump(mode="json"))


@operation(
    summary="Read an environment (secrets masked; live rotated-out keys with their end times)",
    response=EnvironmentOut,
)
async def read(request: AdminRequest) -> Response:
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        view = await _view(request, session, env)
    return JSON(view.model_dump(mode="json"))


@operation(
    summary="Change settings: Segment write key, stream switch, company property, signing "
    "secret, Segment API URL, outbound copies, CORS origins, retention",
    body=EnvironmentSettings,
    response=EnvironmentOut,
)
async def patch(request: AdminRequest) -> Response:
    changes = (await parse_body(request, EnvironmentSettings)).changes()
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        await events.change_settings(
            session,
            env,
            request.state["box"],
            changes,
            allowlist=request.state["settings"].segment_api_hosts,
        )
        await session.refresh(env)  # updated_at is set by the database and expired by the flush
        view = await _view(request, session, env)
    return JSON(view.model_dump(mode="json"))


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
        await environments.delete(session, env, force=force)
    return Response(status_code=204)


GRACE = Param(
    "grace_seconds",
    "how long the key being replaced keeps working (0 revokes it at once); default "
    "WEBHOOK_KEY_GRACE_SECONDS. Also accepted in the body.",
    {"type": "integer", "minimum": 0, "maximum": MAX_GRACE_SECONDS},
)
EARLY = Param(
    "end_previous_keys_early",
    "true: end earlier rotated-out keys with the replaced one even where they were promised"
    " longer (else such a rotation is refused with 409). Also accepted in the body.",
    {"type": "boolean"},
)


@operation(
    summary="Rotate the webhook key; the old one works for a grace period (0: revoked at once)"
    " and earlier ones until their own times (409 if the grace would end one sooner)",
    response=EnvironmentWithKey,
    body=RotateRequest,
    body_required=False,
    query=(GRACE, EARLY),
    errors=(401, 404, 409, 413),
)
async def rotate(request: AdminRequest) -> Response:
    body = await parse_body(request, RotateRequest, required=False)
    grace = _grace(request, body, request.state["settings"].webhook_key_grace_seconds)
    early = _early(request, body)
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        rotated = await events.rotate_webhook_key(
            session, env, grace_seconds=grace, end_previous_keys_early=early
        )
        await session.refresh(env)  # updated_at is set by the database and expired by the flush
        view = await _with_key(request, session, env, rotated.key, rotated.replaced_until)
    return JSON(view.model_dump(mode="json"))


SOURCE_GRACE = Param(
    "grace_seconds",
    "how long the key being replaced keeps working (0 revokes it at once); default "
    "SOURCE_WRITE_KEY_GRACE_SECONDS. Also accepted in the body.",
    {"type": "integer", "minimum": 0, "maximum": MAX_GRACE_SECONDS},
)


@operation(
    summary="Rotate the intake write key (the key of our /v1 intake); the old one works for a"
    " grace period (0: revoked at once) and earlier ones until their own times (409 if the"
    " grace would end one sooner)",
    response=EnvironmentWithSourceKey,
    body=RotateRequest,
    body_required=False,
    query=(SOURCE_GRACE, EARLY),
    errors=(401, 404, 409, 413),
)
async def rotate_source_write_key(request: AdminRequest) -> Response:
    body = await parse_body(request, RotateRequest, required=False)
    grace = _grace(request, body, request.state["settings"].source_write_key_grace_seconds)
    early = _early(request, body)
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        rotated = await events.rotate_source_write_key(
            session, env, grace_seconds=grace, end_previous_keys_early=early
        )
        await session.refresh(env)  # updated_at is set by the database and expired by the flush
        view = EnvironmentWithSourceKey(
            **(await _view(request, session, env)).model_dump(),
            source_write_key=rotated.key,
            previous_source_write_key_valid_until=rotated.replaced_until,
        )
    return JSON(view.model_dump(mode="json"))


def _early(request: AdminRequest, body: RotateRequest) -> bool:
    """end_previous_keys_early, from the query (true/false) or the body."""
    query = request.query_params.get("end_previous_keys_early")
    if query is None:
        return body.end_previous_keys_early
    if query not in ("true", "false"):
        raise BadRequest(
            "end_previous_keys_early must be true or false",
            error="invalid_field",
            field="end_previous_keys_early",
        )
    return query == "true" or body.end_previous_keys_early


def _grace(request: AdminRequest, body: RotateRequest, default: int) -> int:
    """The grace period asked for (query or body, not both), else the configured default."""
    query = request.query_params.get("grace_seconds")
    if query is None:
        return default if body.grace_seconds is None else body.grace_seconds
    if body.grace_seconds is not None:
        raise BadRequest(
            "give grace_seconds in the query or the body, not both",
            error="invalid_field",
            field="grace_seconds",
        )
    try:
        if not query.isascii():
            raise ValueError(query)
        return RotateRequest.model_validate({"grace_seconds": int(query)}).grace_seconds or 0
    except ValueError:
        raise BadRequest(
            f"grace_seconds must be a whole number of seconds from 0 to {MAX_GRACE_SECONDS}",
            error="invalid_field",
            field="grace_seconds",
        ) from None


@operation(summary="Send one test event to Segment and report its answer", response=ConnectionTest)
async def test(request: AdminRequest) -> Response:
    async with unit_of_work(request) as session:
        env = await environment(session, request)
    state = request.state
    result = await test_connection(env, state["box"], state["http"], state["settings"])
    return JSON(ConnectionTest(**result.as_dict()).model_dump(mode="json"))


routes = [
    Route("/environments", create, methods=["POST"]),
    Route("/environments", list_environments, methods=["GET"]),
    Route("/environments/{env_id}", read, methods=["GET"]),
    Route("/environments/{env_id}", patch, methods=["PATCH"]),
    Route("/environments/{env_id}", delete, methods=["DELETE"]),
    Route("/environments/{env_id}/rotate-webhook-key", rotate, methods=["POST"]),
    Route(
        "/environments/{env_id}/rotate-source-write-key",
        rotate_source_write_key,
        methods=["POST"],
    ),
    Route("/environments/{env_id}/test-connection", test, methods=["POST"]),
]
