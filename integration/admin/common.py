"""What admin routes share: the request's state, JSON bodies, the environment from the path."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request

from integration.environments import service as environments
from integration.errors import BadRequest
from integration.outbound.publish import environments_to_wake
from integration.outbound.worker import DELIVER, deliver_job_id
from integration.spec import MessageError, decode
from integration.store.db import transaction
from integration.store.models import Environment
from integration.web import read_body, read_json

ADMIN_BODY_LIMIT = 1024 * 1024


@asynccontextmanager
async def unit_of_work(request: Request) -> AsyncIterator[AsyncSession]:
    """One committed transaction per request; outbox wake-ups are queued after the commit."""
    state = request.app.state
    async with transaction(state.sessions) as session:
        yield session
        woken = environments_to_wake(session)
    for env_id in woken:
        await state.queue.enqueue(DELIVER, str(env_id), job_id=deliver_job_id(env_id))


async def json_object(request: Request) -> dict[str, Any]:
    body = await read_json(request, ADMIN_BODY_LIMIT)
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object", error="invalid_body")
    return body


async def optional_json_object(request: Request) -> dict[str, Any]:
    """A JSON object, or {} for an empty body; read within ADMIN_BODY_LIMIT like any other."""
    raw = await read_body(request, ADMIN_BODY_LIMIT)
    if not raw.strip():
        return {}
    try:
        body = decode(raw)
    except MessageError as exc:
        raise BadRequest(exc.detail, error=exc.error) from None
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object", error="invalid_body")
    return body


async def environment(session: AsyncSession, request: Request) -> Environment:
    return await environments.get(session, request.path_params["env_id"])
