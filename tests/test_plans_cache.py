"""The tracking plan in force, cached per process (integration/plans/cache.py): a new version
is in force in a process within 2 s, whether it was saved through the service in another
process (announced after commit) or written with SQL that nobody announces (the fingerprint).

The test process plays the API process: a PlanCache and the environments listener of its
own, as the app's lifespan makes them."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from integration.config import Settings
from integration.environments.key_cache import ChangeListener
from integration.plans import service as plans
from integration.plans.cache import PlanCache
from integration.plans.document import Settings as PlanSettings
from integration.store.db import SessionMaker, make_sessionmaker, transaction
from tests.segment_payloads import MakeEnv

HEARD_WITHIN = 2.0


@pytest.fixture
async def cache(engine: AsyncEngine, settings: Settings) -> AsyncIterator[PlanCache]:
    assert settings.database_url
    found = PlanCache(engine)
    listener = ChangeListener(create_async_engine(settings.database_url, pool_size=1), [found])
    listener.start()
    await asyncio.wait_for(listener.listening.wait(), 10)
    yield found
    await listener.stop()


async def in_force_within(cache: PlanCache, env_id: uuid.UUID, version_event: str) -> float:
    """Seconds until the cached plan lists `version_event`; fails after HEARD_WITHIN."""
    start = time.monotonic()
    while True:
        plan = await cache.plan(env_id, "inbound")
        if plan is not None and plan.entry("track", version_event) is not None:
            return time.monotonic() - start
        assert time.monotonic() - start < HEARD_WITHIN, "the new plan is not in force"
        await asyncio.sleep(0.02)


def plan_of(event: str) -> dict[str, object]:
    return {"events": [{"type": "track", "name": event}]}


async def test_a_plan_saved_in_another_process_is_in_force_within_two_seconds(
    cache: PlanCache, engine: AsyncEngine, make_environment: MakeEnv
) -> None:
    env = await make_environment("cache")
    assert await cache.plan(env.id, "inbound") is None  # none, and that is remembered
    elsewhere: SessionMaker = make_sessionmaker(engine)  # not this process's sessions
    for event in ("First", "Second"):
        async with transaction(elsewhere) as session:
            await plans.save(
                session, env.id, "inbound", plan_of(event), PlanSettings(), created_by="test"
            )
        await in_force_within(cache, env.id, event)


async def test_a_plan_written_with_sql_is_in_force_within_two_seconds(
    cache: PlanCache, sessions: SessionMaker, make_environment: MakeEnv
) -> None:
    env = await make_environment("cache")
    assert await cache.plan(env.id, "inbound") is None
    async with transaction(sessions) as session:
        await session.execute(
            text(
                "INSERT INTO tracking_plans (environment_id, direction, version, plan,"
                " unplanned_event, unplanned_property, created_by)"
                " VALUES (:env, 'inbound', 1, CAST(:plan AS jsonb), 'allow', 'keep', 'sql')"
            ),
            {"env": env.id, "plan": orjson.dumps(plan_of("By SQL")).decode()},
        )
    await in_force_within(cache, env.id, "By SQL")
    assert await cache.plan(env.id, "outbound") is None  # directions are apart
