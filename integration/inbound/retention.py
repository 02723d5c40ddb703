"""Expiring events past an environment's retention (`env set NAME --retention-days N`).

The worker deletes them in bounded batches, oldest first, through the (environment, timestamp)
index: never one giant DELETE that would hold locks for minutes and bloat the WAL, and safe
while the webhook keeps writing (new events are never old). Profiles stay: a person's traits
are not events. An event's age is its message time (`timestamp`), which the index orders.

The digests of erased messages (`erased_messages`, kept so that a redelivery of one stays a
duplicate) go by the same rule, by the time of their erasure: a redelivery comes within hours,
and an event that old would have been expired anyway.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from sqlalchemy import text

from integration.metrics import EVENTS_EXPIRED, OLDEST_EVENT
from integration.store.db import SessionMaker, transaction

log = logging.getLogger(__name__)

BATCH = 5000
MAX_BATCHES = 20  # per environment and run: a backlog drains over several minutes

RETAINING = text(
    "SELECT id, name, retention_days FROM environments WHERE retention_days IS NOT NULL"
)

DELETE_EXPIRED = text("""
DELETE FROM events WHERE environment_id = :env AND id IN (
    SELECT id FROM events
    WHERE environment_id = :env AND timestamp < now() - make_interval(days => :days)
    ORDER BY timestamp
    LIMIT :limit
)
""")

FORGET_ERASED = text("""
DELETE FROM erased_messages
WHERE environment_id = :env AND created_at < now() - make_interval(days => :days)
""")

OLDEST = text("SELECT min(timestamp) FROM events WHERE environment_id = :env")


async def expire(sessions: SessionMaker, env_id: uuid.UUID, days: int) -> int:
    """Delete this environment's events older than `days`, a batch per transaction."""
    expired = 0
    for _ in range(MAX_BATCHES):
        async with transaction(sessions) as session:
            result = await session.execute(
                DELETE_EXPIRED, {"env": env_id, "days": days, "limit": BATCH}
            )
        count = int(result.rowcount or 0)  # type: ignore[attr-defined]
        expired += count
        if count < BATCH:
            break
    async with transaction(sessions) as session:
        await session.execute(FORGET_ERASED, {"env": env_id, "days": days})
    return expired


async def expire_job(ctx: dict[str, Any]) -> int:
    """Every environment with a retention: expire, then report the oldest event it keeps."""
    sessions: SessionMaker = ctx["sessions"]
    async with sessions() as session:
        retaining = (await session.execute(RETAINING)).all()
    total = 0
    for env_id, name, days in retaining:
        expired = await expire(sessions, env_id, days)
        EVENTS_EXPIRED.labels(name).inc(expired)
        async with sessions() as session:
            oldest = await session.scalar(OLDEST, {"env": env_id})
        OLDEST_EVENT.labels(name).set(oldest.timestamp() if oldest else 0)
        if expired:
            log.info("environment %s: expired %d events older than %d days", name, expired, days)
        total += expired
    return total
