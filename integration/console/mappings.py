"""The mappings page: per direction the current trigger and mapping (edited as JSON), its
versions with revert, promotion to another environment, and a preview of a sample message
beside what it becomes. Every form calls the service the admin API calls
(integration/environments/mappings.py), so the console checks, stores and previews exactly
as the API does."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response
from starlette.routing import Route

from integration.console.common import (
    ConsoleRequest,
    environment,
    form,
    page,
    redirect,
    render,
    snapshot,
    unit_of_work,
)
from integration.environments import mappings
from integration.environments import service as environments
from integration.environments.schemas import MAX_TRIGGER_LENGTH, MappingPreview
from integration.errors import AppError, BadRequest, NotFound
from integration.store.models import MAPPING_DIRECTIONS, Environment, MappingVersion

BY = "console"
SAMPLE = {
    "type": "track",
    "userId": "u-1",
    "event": "Signed Up",
    "properties": {"plan_name": "pro"},
}


@dataclass
class Direction:
    """One direction's part of the page: what is stored, and what was typed or previewed."""

    name: str
    versions: list[MappingVersion] = field(default_factory=list)
    trigger: str = ""
    mapping: str = "{}"
    sample: str = ""
    preview: MappingPreview | None = None
    error: str | None = None

    @property
    def current(self) -> MappingVersion | None:
        return self.versions[0] if self.versions else None


async def _directions(session: AsyncSession, env: Environment) -> dict[str, Direction]:
    out: dict[str, Direction] = {}
    for name in MAPPING_DIRECTIONS:
        versions = await mappings.history(session, env, name)
        shown = Direction(name, versions, sample=_pretty(SAMPLE))
        if versions:
            shown.trigger = versions[0].trigger or ""
            shown.mapping = _pretty(versions[0].mapping)
        out[name] = shown
    return out


def _pretty(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


def _object(text: str, what: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the {what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadRequest(f"the {what} must be a JSON object")
    return value


def _trigger(text: str) -> str | None:
    if len(text) > MAX_TRIGGER_LENGTH:
        raise BadRequest(f"the trigger is longer than {MAX_TRIGGER_LENGTH} characters")
    return text.strip() or None


def _direction(request: ConsoleRequest) -> str:
    return mappings.check_direction(request.path_params["direction"])


async def _show(
    request: ConsoleRequest, status_code: int = 200, typed: Direction | None = None
) -> Response:
    """The page; `typed`: one direction as the form left it (what was typed, its preview or
    why it was refused), shown in place of what is stored."""
    async with snapshot(request) as session:
        env = await environment(session, request)
        directions = await _directions(session, env)
        others = [e for e in await environments.list_all(session) if e.id != env.id]
    if typed is not None:
        typed.versions = directions[typed.name].versions
        directions[typed.name] = typed
    return render(
        request,
        "mappings.html",
        status_code=status_code,
        env=env,
        directions=directions,
        others=others,
        saved=request.query_params.get("saved"),
    )


@page
async def show(request: ConsoleRequest) -> Response:
    return await _show(request)


@page
async def change(request: ConsoleRequest) -> Response:
    """Save what was typed as the next version; a refusal keeps it in the form, with why."""
    direction = _direction(request)
    fields = await form(request)
    typed = Direction(
        direction, trigger=fields.get("trigger", ""), mapping=fields.get("mapping", "")
    )
    typed.sample = fields.get("sample", "") or _pretty(SAMPLE)
    try:
        mapping = _object(typed.mapping, "mapping")
        async with unit_of_work(request) as session:
            env = await environment(session, request)
            await mappings.change(
                session, env, direction, trigger=_trigger(typed.trigger), mapping=mapping, by=BY
            )
    except AppError as exc:
        if isinstance(exc, NotFound):
            raise
        typed.error = exc.detail
        return await _show(request, exc.status_code, typed)
    return redirect(f"/environments/{env.id}/mappings?saved={direction}#{direction}")


@page
async def preview(request: ConsoleRequest) -> Response:
    """What the mapping as typed (saved or not) makes of the sample: the same call as the
    pipeline's, nothing saved or sent."""
    direction = _direction(request)
    fields = await form(request)
    typed = Direction(
        direction,
        trigger=fields.get("trigger", ""),
        mapping=fields.get("mapping", ""),
        sample=fields.get("sample", ""),
    )
    try:
        sample = _object(typed.sample, "sample message")
        typed.sample = _pretty(sample)  # beside the output, in the same layout
        mapping = _object(typed.mapping, "mapping")
        async with snapshot(request) as session:
            env = await environment(session, request)
            typed.preview = await mappings.preview(
                session, env, direction, sample, trigger=_trigger(typed.trigger), mapping=mapping
            )
    except AppError as exc:
        if isinstance(exc, NotFound):
            raise
        typed.error = exc.detail
        return await _show(request, exc.status_code, typed)
    return await _show(request, 200, typed)


@page
async def revert(request: ConsoleRequest) -> Response:
    direction = _direction(request)
    await form(request)
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        await mappings.revert(session, env, direction, by=BY)
    return redirect(f"/environments/{env.id}/mappings?saved={direction}#{direction}")


@page
async def promote(request: ConsoleRequest) -> Response:
    direction = _direction(request)
    fields = await form(request)
    to = fields.get("to", "")
    if not to:
        raise BadRequest("choose the environment to promote to")
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        row = await mappings.promote(session, env, direction, to, by=BY)
    return redirect(f"/environments/{row.environment_id}/mappings?saved={direction}#{direction}")


routes = [
    Route("/environments/{env_id}/mappings", show, methods=["GET"]),
    Route("/environments/{env_id}/mappings/{direction}", change, methods=["POST"]),
    Route("/environments/{env_id}/mappings/{direction}/preview", preview, methods=["POST"]),
    Route("/environments/{env_id}/mappings/{direction}/revert", revert, methods=["POST"]),
    Route("/environments/{env_id}/mappings/{direction}/promote", promote, methods=["POST"]),
]
