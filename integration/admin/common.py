"""What admin routes share: the request's state, JSON bodies, the environment from the path."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any, TypedDict

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from starlette.requests import Request

from integration.config import Settings
from integration.crypto import SecretBox
from integration.environments import service as environments
from integration.errors import BadRequest
from integration.http.body import read_body, read_json
from integration.spec import MessageError, decode
from integration.store.db import SessionMaker, transaction
from integration.store.models import Environment

ADMIN_BODY_LIMIT = 1024 * 1024


class AdminState(TypedDict):
    """What admin routes read of the app's state."""

    settings: Settings
    engine: AsyncEngine
    sessions: SessionMaker
    box: SecretBox
    http: httpx.AsyncClient


AdminRequest = Request[AdminState]


def unit_of_work(request: AdminRequest) -> AbstractAsyncContextManager[AsyncSession]:
    """One committed transaction per request; the jobs it queued are sent after the commit."""
    return transaction(request.state["sessions"])


async def json_object(request: AdminRequest) -> dict[str, Any]:
    body = await read_json(request, ADMIN_BODY_LIMIT)
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object", error="invalid_body")
    return body


async def optional_json_object(request: AdminRequest) -> dict[str, Any]:
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


async def environment(session: AsyncSession, request: AdminRequest) -> Environment:
    return await environments.get(session, request.path_params["env_id"])
