"""The outbox's statements outside delivery itself: counts for the admin API, and housekeeping
(delivered rows are kept for a while, to show in the admin API, then purged in bounded
batches)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from integration.metrics import OUTBOX_MESSAGES
from integration.store.db import SessionMaker, transaction
from integration.store.models import DELIVERY_STATUSES

log = logging.getLogger(__name__)

PURGE_BATCH = 5000

# Oldest first through the partial index on delivered_at; a bounded batch per transaction, so a
# backlog of millions never becomes one giant DELETE that holds locks and bloats the WAL.
PURGE_DELIVERED = text("""
DELETE FROM outbox WHERE id IN (
    SELECT id FROM outbox
    WHERE status = 'delivered'
      AND delivered_at < now() - make_interval(days => CAST(:days AS int))
    ORDER BY delivered_at
    LIMIT :limit
)
""")


async def purge_delivered(sessions: SessionMaker, *, days: int, max_batches: int = 20) -> int:
    """Delete delivered rows older than `days`; returns how many went."""
    purged = 0
    for _ in range(max_batches):
        async with transaction(sessions) as session:
            result = await session.execute(PURGE_DELIVERED, {"days": days, "limit": PURGE_BATCH})
        count = int(result.rowcount or 0)  # type: ignore[attr-defined]
        purged += count
        if count < PURGE_BATCH:
            break
    return purged


DELIVERY_COUNTS = text("""
SELECT
  (SELECT count(*) FROM outbox WHERE environment_id = :env AND status = 'pending')
      AS outbound_pending,
  (SELECT count(*) FROM outbox WHERE environment_id = :env AND status = 'delivered')
      AS outbound_delivered,
  (SELECT count(*) FROM outbox WHERE environment_id = :env AND status = 'dead')
      AS outbound_dead,
  (SELECT max(delivered_at) FROM outbox WHERE environment_id = :env) AS last_outbound_at
""")


async def counts(session: AsyncSession, env_id: uuid.UUID) -> dict[str, Any]:
    """The environment's outbox by status, and when Segment last accepted a batch."""
    return dict((await session.execute(DELIVERY_COUNTS, {"env": env_id})).mappings().one())


OUTBOX_BY_STATUS = text("SELECT status, count(*) FROM outbox GROUP BY status")


async def refresh_gauges(sessions: SessionMaker) -> None:
    """The outbox's state is in Postgres, so its gauges are read there, at scrape time. The
    worker's own counters (Segment responses, delivery latency) are on WORKER_METRICS_PORT."""
    try:
        async with transaction(sessions) as session:
            await session.execute(text("SET LOCAL statement_timeout = '2s'"))
            rows = (await session.execute(OUTBOX_BY_STATUS)).all()
    except Exception as exc:  # metrics must still answer while the database is away
        log.warning("outbox gauges unavailable: %s", type(exc).__name__)
        return
    counts: dict[str, int] = {status: count for status, count in rows}
    for status in DELIVERY_STATUSES:
        OUTBOX_MESSAGES.labels(status).set(counts.get(status, 0))
