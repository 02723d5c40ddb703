"""A user's identity changed from their page (issue #25): applying or dismissing an identity
conflict, and unmerging a merge. The same service functions as the REST API (inbound.conflicts,
inbound.unmerge), then back to the user's page with what was done."""

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
from integration.inbound import conflicts, unmerge
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


@page
async def unmerge_user(request: ConsoleRequest) -> Response:
    """Take back the newest merge of the form's merged_id into the form's user; a refusal
    (merged_since, not_undoable, not_found) is the console's error page."""
    fields = await form(request)
    user_id = _field(fields, "id", "the form names no user to come back to: reload the page")
    merged_id = _field(fields, "merged_id", "the form names no merged id: reload the page")
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        done = await unmerge.unmerge(session, env.id, user_id, merged_id, ACTOR)
    return redirect(
        f"/environments/{env.id}/user?id={quote(user_id, safe='')}&unmerged={done.merge_id}"
    )


def _field(fields: dict[str, str], name: str, missing: str) -> str:
    value = fields.get(name, "")
    if not value or "\x00" in value or len(value) > MAX_TEXT_CHARS:
        raise BadRequest(missing)
    return value


async def _resolve(request: ConsoleRequest, action: Resolve) -> Response:
    fields = await form(request)
    back = _field(fields, "id", "the form names no user to come back to: reload the page")
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
    Route("/environments/{env_id}/user/unmerge", unmerge_user, methods=["POST"]),
    Route("/environments/{env_id}/identity-conflicts/{conflict_id}/apply", apply, methods=["POST"]),
    Route(
        "/environments/{env_id}/identity-conflicts/{conflict_id}/dismiss",
        dismiss,
        methods=["POST"],
    ),
]
