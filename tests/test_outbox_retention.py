"""Delivered outbox rows hold what was sent (traits, emails): they are kept for
OUTBOX_DELIVERED_RETENTION_DAYS, then the worker purges them in bounded batches."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

from sqlalchemy import text

from integration.config import Settings
from integration.outbound.outbox import purge_delivered
from integration.store.db import SessionMaker, transaction
from tests.conftest import wait_for
from tests.outbound_support import in_process_worker
from tests.segment_payloads import Env

ROWS = {
    # message id: (status, days since delivery or creation)
    "delivered-old": ("delivered", 10),
    "delivered-recent": ("delivered", 1),
    "pending-old": ("pending", 30),
    "dead-old": ("dead", 30),
}


async def seed(sessions: SessionMaker, env: Env) -> None:
    async with transaction(sessions) as session:
        for message_id, (status, days) in ROWS.items():
            await session.execute(
                text(
                    "INSERT INTO outbox (environment_id, message_id, type, payload, size_bytes,"
                    " status, created_at, delivered_at, next_attempt_at) VALUES (:e, :m, 'track',"
                    " '{}'::jsonb, 2, :s, now() - make_interval(days => :d),"
                    " now() - make_interval(days => :d) + CAST(:never AS interval),"
                    " now() + interval '1 day')"
                ),
                {
                    "e": env.id,
                    "m": message_id,
                    "s": status,
                    "d": days,
                    # Only delivered rows have a delivery time: NULL + interval is NULL.
                    "never": timedelta(0) if status == "delivered" else None,
                },
            )


async def remaining(sessions: SessionMaker, env: Env) -> set[str]:
    async with sessions() as session:
        rows = await session.scalars(
            text("SELECT message_id FROM outbox WHERE environment_id = :e"), {"e": env.id}
        )
        return set(rows)


async def test_purge_removes_only_delivered_rows_past_retention(
    sessions: SessionMaker, make_environment: Callable[..., Awaitable[Env]]
) -> None:
    env = await make_environment()
    await seed(sessions, env)
    assert await purge_delivered(sessions, days=7) >= 1
    assert await remaining(sessions, env) == set(ROWS) - {"delivered-old"}
    assert await purge_delivered(sessions, days=0) >= 1
    assert await remaining(sessions, env) == {"pending-old", "dead-old"}


async def test_the_worker_purges_delivered_rows_past_retention(
    settings: Settings,
    sessions: SessionMaker,
    make_environment: Callable[..., Awaitable[Env]],
) -> None:
    env = await make_environment()
    await seed(sessions, env)
    async with in_process_worker(settings, outbox_delivered_retention_days=5):

        async def purged() -> bool:
            return "delivered-old" not in await remaining(sessions, env)

        await wait_for(purged, timeout=20)
    assert await remaining(sessions, env) == set(ROWS) - {"delivered-old"}
