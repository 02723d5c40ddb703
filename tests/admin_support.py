"""Helpers shared by the admin API tests (not a test module itself).

Environments are made through the admin API itself where the test is about the API, and data
arrives the way Segment sends it: real messages POSTed to the environment's webhook URL.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import InstrumentedAttribute

from integration.store.db import SessionMaker
from integration.store.models import (
    AnonymousId,
    Company,
    Environment,
    Event,
    Membership,
    OutboxMessage,
    PreviousKey,
    User,
)

# A port nothing listens on: settings that could make the product call out point here, so no
# test ever sends anything to the real Segment.
UNREACHABLE_API = "http://127.0.0.1:1"


def unique_name(prefix: str = "adm") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def json_of(response: httpx.Response) -> Any:
    assert response.headers["content-type"].startswith("application/json"), response.headers
    return response.json()


def ok(response: httpx.Response, status: int = 200) -> Any:
    """The JSON body of a response that must have the given status."""
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    return json_of(response)


def error(response: httpx.Response, status: int, *, field: str | None = None) -> dict[str, Any]:
    """An error answer in the one error shape; `field` names the offending input when given."""
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    body: dict[str, Any] = json_of(response)
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("detail"), str) and body["detail"], body
    if field is not None:
        assert body.get("field") == field, body
    return body


async def create_environment(admin: httpx.AsyncClient, **settings: Any) -> dict[str, Any]:
    """POST /api/environments with a unique name (and optional settings); the 201 body."""
    body = {"name": unique_name(), **settings}
    created: dict[str, Any] = ok(await admin.post("/api/environments", json=body), 201)
    return created


def path_of(webhook_url: str) -> str:
    """The path part of a webhook URL (PUBLIC_BASE_URL is not where the test server listens)."""
    return httpx.URL(webhook_url).path


async def send(http: httpx.AsyncClient, path: str, *messages: dict[str, Any]) -> dict[str, Any]:
    """POST messages (one, or a batch) to a webhook path and expect every one stored."""
    body: Any = messages[0] if len(messages) == 1 else list(messages)
    response = await http.post(path, json=body)
    answer: dict[str, Any] = ok(response)
    assert answer["rejected"] == [], answer
    return answer


async def collect(
    admin: httpx.AsyncClient, path: str, *, params: dict[str, Any] | None = None
) -> list[list[dict[str, Any]]]:
    """Follow next_cursor to the end; returns the pages."""
    pages: list[list[dict[str, Any]]] = []
    query = dict(params or {})
    for _ in range(1000):
        page = ok(await admin.get(path, params=query))
        assert set(page) == {"items", "next_cursor"}, page
        pages.append(page["items"])
        if page["next_cursor"] is None:
            return pages
        query["cursor"] = page["next_cursor"]
    raise AssertionError("pagination did not end")


COUNTED: dict[str, InstrumentedAttribute[Any]] = {
    "users": User.environment_id,
    "anonymous_ids": AnonymousId.environment_id,
    "companies": Company.environment_id,
    "memberships": Membership.environment_id,
    "events": Event.environment_id,
    "outbox": OutboxMessage.environment_id,
}


async def row_counts(sessions: SessionMaker, env_id: uuid.UUID | str) -> dict[str, int]:
    """Rows per table for one environment."""
    key = env_id if isinstance(env_id, uuid.UUID) else uuid.UUID(env_id)
    out: dict[str, int] = {}
    async with sessions() as s:
        for table, column in COUNTED.items():
            out[table] = await s.scalar(select(func.count()).where(column == key)) or 0
    return out


async def environment_row(sessions: SessionMaker, env_id: uuid.UUID | str) -> Environment | None:
    key = env_id if isinstance(env_id, uuid.UUID) else uuid.UUID(env_id)
    async with sessions() as s:
        return await s.get(Environment, key)


async def previous_key_hashes(sessions: SessionMaker, env_id: uuid.UUID, kind: str) -> list[str]:
    """The digests of an environment's rotated-out keys of one kind, still working or not."""
    async with sessions() as s:
        rows = await s.scalars(
            select(PreviousKey.key_hash).where(
                PreviousKey.environment_id == env_id, PreviousKey.kind == kind
            )
        )
        return list(rows)


def ids(items: Iterable[dict[str, Any]], key: str) -> list[Any]:
    return [item[key] for item in items]
