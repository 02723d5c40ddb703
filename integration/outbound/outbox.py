"""Outbox housekeeping: delivered rows are kept for a while (to show in the admin API), then
purged in bounded batches."""

from __future__ import annotations

from sqlalchemy import text

from integration.store.db import SessionMaker, transaction

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
