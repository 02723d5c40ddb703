"""Concurrent webhook requests share transactions (group commit); each still gets its own,
exact answer only once its messages are committed."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy import func, select

from integration.store.db import SessionMaker
from integration.store.models import Event

if TYPE_CHECKING:
    from tests.conftest import TestEnvironment


def track(message_id: str, user: str = "u1") -> dict[str, Any]:
    return {"type": "track", "userId": user, "event": "Clicked", "messageId": message_id}


async def events(sessions: SessionMaker, env: TestEnvironment) -> int:
    async with sessions() as session:
        stmt = select(func.count()).select_from(Event).where(Event.environment_id == env.id)
        return int(await session.scalar(stmt) or 0)


async def test_concurrent_requests_to_two_environments_each_commit_their_own(
    http: httpx.AsyncClient,
    make_environment: Callable[..., Awaitable[TestEnvironment]],
    sessions: SessionMaker,
) -> None:
    staging, production = await make_environment("staging"), await make_environment("prod")
    posts = [
        http.post(env.webhook_path, json=track(f"m-{i}", user=f"u{i % 7}"))
        for i in range(60)
        for env in (staging, production)
    ]
    answers = await asyncio.gather(*posts)
    assert [a.status_code for a in answers] == [200] * 120
    assert all(a.json() == {"stored": 1, "duplicates": 0, "rejected": []} for a in answers)
    assert await events(sessions, staging) == await events(sessions, production) == 60


async def test_the_same_message_sent_concurrently_is_stored_once(
    http: httpx.AsyncClient,
    make_environment: Callable[..., Awaitable[TestEnvironment]],
    sessions: SessionMaker,
) -> None:
    env = await make_environment()
    message = track(str(uuid.uuid4()))
    answers = await asyncio.gather(*[http.post(env.webhook_path, json=message) for _ in range(30)])
    bodies = [a.json() for a in answers]
    assert sum(b["stored"] for b in bodies) == 1
    assert sum(b["duplicates"] for b in bodies) == 29
    assert await events(sessions, env) == 1


async def test_a_refused_request_does_not_affect_the_others_in_its_group(
    http: httpx.AsyncClient,
    make_environment: Callable[..., Awaitable[TestEnvironment]],
    sessions: SessionMaker,
) -> None:
    env = await make_environment()
    good = [http.post(env.webhook_path, json=track(f"ok-{i}")) for i in range(20)]
    unknown = [http.post("/webhooks/segment/not-a-key", json=track(f"x-{i}")) for i in range(5)]
    invalid = [http.post(env.webhook_path, json={"type": "track", "userId": "u"})] * 1
    answers = await asyncio.gather(*good, *unknown, *invalid)
    assert [a.status_code for a in answers] == [200] * 20 + [401] * 5 + [400]
    assert answers[-1].json()["error"] == "missing_event"
    assert await events(sessions, env) == 20
