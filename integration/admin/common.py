"""What admin routes share: the request's state, JSON bodies, the environment from the path."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request

from integration.environments import service as environments
from integration.errors import BadRequest
from integration.spec import MessageError, decode
from integration.store.db import transaction
from integration.store.models import Environment
from integration.web import read_body, read_json

ADMIN_BODY_LIMIT = 1024 * 1024


def unit_of_work(request: Request) -> AbstractAsyncContextManager[AsyncSession]:
    """One committed transaction per request; the jobs it queued are sent after the commit."""
    return transaction(request.app.state.sessions)


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
