"""What admin routes share: the request's state, JSON bodies, the environment from the path."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import TypedDict, TypeVar

import httpx
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from starlette.requests import Request

from integration.config import MIB, Settings
from integration.crypto import SecretBox
from integration.environments import service as environments
from integration.errors import BadRequest
from integration.http.body import json_of, read_bounded
from integration.store.db import SessionMaker, transaction
from integration.store.models import Environment

ADMIN_BODY_LIMIT = MIB
M = TypeVar("M", bound=BaseModel)


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


async def parse_body(request: AdminRequest, model: type[M], *, required: bool = True) -> M:
    """The body as `model`, read within ADMIN_BODY_LIMIT and validated strictly by the same
    schema the OpenAPI document shows. An empty body is `{}` when the body is optional."""
    raw = await read_bounded(request, ADMIN_BODY_LIMIT)
    if required or raw.strip():
        body = json_of(raw, empty="body is empty; send a JSON object")
    else:
        body = {}
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object", error="invalid_body")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise _invalid(exc) from None


def _invalid(exc: ValidationError) -> BadRequest:
    """The first problem, naming its field."""
    first = exc.errors(include_url=False)[0]
    field = str(first["loc"][0]) if first["loc"] else "body"
    words = "is not a setting here" if first["type"] == "extra_forbidden" else first["msg"]
    return BadRequest(f"{field}: {words}", error="invalid_field", field=field)


async def environment(session: AsyncSession, request: AdminRequest) -> Environment:
    return await environments.get(session, request.path_params["env_id"])
