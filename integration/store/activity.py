"""Activity per environment and minute (migration 0006's `activity_counts`, kept by triggers on
`events` and `outbox`): what the stats and the console show, read from a few hundred rows
instead of counted over millions."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from integration.store.db import SessionMaker, transaction

# Minutes older than this are folded into one row per day (slot -1), so that an environment's
# totals stay a sum over a few thousand rows however long it lives.
FOLD_AFTER = "2 days"

TOTALS = text("""
SELECT coalesce(sum(inbound), 0) AS events_total,
       coalesce(sum(inbound) FILTER (
           WHERE bucket >= date_trunc('minute', now() - interval '1 hour')), 0)
           AS events_last_hour,
       coalesce(sum(inbound) FILTER (
           WHERE bucket >= date_trunc('minute', now() - interval '1 day')), 0)
           AS events_last_day,
       max(last_inbound_at) AS last_inbound_at,
       coalesce(sum(delivered), 0) AS outbound_delivered,
       max(last_delivered_at) AS last_outbound_at
FROM activity_counts WHERE environment_id = :env
""")

PER_MINUTE = text("""
SELECT bucket, sum(inbound) AS inbound, sum(delivered) AS delivered
FROM activity_counts
WHERE environment_id = :env AND bucket >= :since AND slot >= 0
GROUP BY bucket ORDER BY bucket
""")

FOLD = text(f"""
WITH folded AS (
    DELETE FROM activity_counts
    WHERE bucket < date_trunc('day', now() - interval '{FOLD_AFTER}') AND slot >= 0
    RETURNING environment_id, bucket, inbound, delivered, last_inbound_at, last_delivered_at
)
INSERT INTO activity_counts (environment_id, bucket, slot, inbound, delivered,
                             last_inbound_at, last_delivered_at)
SELECT environment_id, date_trunc('day', bucket), -1, sum(inbound), sum(delivered),
       max(last_inbound_at), max(last_delivered_at)
FROM folded GROUP BY 1, 2
ON CONFLICT (environment_id, bucket, slot) DO UPDATE SET
    inbound = activity_counts.inbound + excluded.inbound,
    delivered = activity_counts.delivered + excluded.delivered,
    last_inbound_at = greatest(activity_counts.last_inbound_at, excluded.last_inbound_at),
    last_delivered_at = greatest(activity_counts.last_delivered_at, excluded.last_delivered_at)
""")


async def totals(session: AsyncSession, env_id: uuid.UUID) -> dict[str, Any]:
    """Events stored (all, last hour, last day, by the minute they arrived), deliveries made,
    and when each last happened."""
    return dict((await session.execute(TOTALS, {"env": env_id})).mappings().one())


async def per_minute(
    session: AsyncSession, env_id: uuid.UUID, since: datetime
) -> list[tuple[datetime, int, int]]:
    """(minute, events stored, deliveries made) for each minute since `since` that had any."""
    rows = await session.execute(PER_MINUTE, {"env": env_id, "since": since})
    return [(r.bucket, int(r.inbound), int(r.delivered)) for r in rows]


async def fold(sessions: SessionMaker) -> None:
    """Old minutes into days (the worker does this now and then)."""
    async with transaction(sessions) as session:
        await session.execute(FOLD)


@dataclass(frozen=True, slots=True)
class Last:
    inbound: datetime | None
    delivered: datetime | None


LAST = text("""
SELECT env.id, max(a.last_inbound_at), max(a.last_delivered_at)
FROM unnest(CAST(:ids AS uuid[])) AS env(id)
LEFT JOIN activity_counts a ON a.environment_id = env.id
GROUP BY env.id
""")


async def last(session: AsyncSession, env_ids: list[uuid.UUID]) -> dict[uuid.UUID, Last]:
    """When each environment last stored a message and last had a delivery accepted."""
    if not env_ids:
        return {}
    rows = await session.execute(LAST, {"ids": env_ids})
    return {env_id: Last(inbound, delivered) for env_id, inbound, delivered in rows.tuples()}
