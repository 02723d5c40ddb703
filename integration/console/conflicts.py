"""Applying or dismissing an identity conflict (issue #25) from a user's page: the same service
functions as the REST API (inbound.conflicts), then back to the user's page with what was done."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Final
from urllib.parse import quote

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response
from starlette.routing import Route

from integration.console.common import (
    ConsoleRequest,
    environment,
    form,
    page,
    redirect,
    unit_of_work,
)
from integration.errors import BadRequest
from integration.inbound import conflicts
from integration.spec import MAX_TEXT_CHARS

# inbound.conflicts.apply or .dismiss: (session, environment id, conflict id, actor).
Resolve = Callable[[AsyncSession, uuid.UUID, int, str], Awaitable[None]]

ACTOR: Final = "console"


@page
async def apply(request: ConsoleRequest) -> Response:
    return await _resolve(request, conflicts.apply)


@page
async def dismiss(request: ConsoleRequest) -> Response:
    return await _resolve(request, conflicts.dismiss)


async def _resolve(request: ConsoleRequest, action: Resolve) -> Response:
    fields = await form(request)
    back = fields.get("id", "")
    if not back or "\x00" in back or len(back) > MAX_TEXT_CHARS:
        raise BadRequest("the form names no user to come back to: reload the page")
    conflict_id = conflicts.conflict_id(request.path_params["conflict_id"])
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        await action(session, env.id, conflict_id, ACTOR)
        done = await conflicts.one(session, env.id, conflict_id)
    if done.state == "applied" and done.kind == "identified_merge" and back == done.from_id:
        # This user was merged into the one the message named: their page is that user's now.
        back = done.user_id
    return redirect(f"/environments/{env.id}/user?id={quote(back, safe='')}&done={done.state}")


routes = [
    Route("/environments/{env_id}/identity-conflicts/{conflict_id}/apply", apply, methods=["POST"]),
    Route(
        "/environments/{env_id}/identity-conflicts/{conflict_id}/dismiss",
        dismiss,
        methods=["POST"],
    ),
]
