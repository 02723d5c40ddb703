"""Activity per environment and minute (migration 0006's `activity_counts`, kept by triggers on
`events` and `outbox`): what the stats and the console show, read from a few hundred rows
instead of counted over millions."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from integration.store.db import SessionMaker, transaction

# Minutes older than this are folded into one row per day (slot -1), so that an environment's
# totals stay a sum over a few thousand rows however long it lives.
FOLD_AFTER = "2 days"
FOLD_AGE = timedelta(days=2)

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

# Every count column: summed when minutes fold into a day.
SUMMED = (
    "inbound",
    "delivered",
    "received",
    "stored",
    "duplicates",
    "refused_signature",
    "refused_invalid",
    "refused_too_large",
    "accepted",
    "blocked_ids",
    "mapping_failed_inbound",
    "mapping_failed_outbound",
    "quarantined",
)
_LIST = ", ".join(SUMMED)
FOLD_TO_DAYS = text(f"""
WITH folded AS (
    DELETE FROM activity_counts
    WHERE bucket < date_trunc('day', now() - interval '{FOLD_AFTER}') AND slot >= 0
    RETURNING environment_id, bucket, {_LIST}, last_inbound_at, last_delivered_at
)
INSERT INTO activity_counts (environment_id, bucket, slot, {_LIST},
                             last_inbound_at, last_delivered_at)
SELECT environment_id, date_trunc('day', bucket), -1, {", ".join(f"sum({c})" for c in SUMMED)},
       max(last_inbound_at), max(last_delivered_at)
FROM folded GROUP BY 1, 2
ON CONFLICT (environment_id, bucket, slot) DO UPDATE SET
    {", ".join(f"{c} = activity_counts.{c} + excluded.{c}" for c in SUMMED)},
    last_inbound_at = greatest(activity_counts.last_inbound_at, excluded.last_inbound_at),
    last_delivered_at = greatest(activity_counts.last_delivered_at, excluded.last_delivered_at)
""")


# In this backend's stripe, as the ledger's counts are (inbound/ledger.py).
MAPPING_FAILED = text("""
INSERT INTO activity_counts (environment_id, bucket, slot, mapping_failed_outbound)
VALUES (CAST(:env AS uuid), date_trunc('minute', now()), pg_backend_pid() % 16, :n)
ON CONFLICT (environment_id, bucket, slot) DO UPDATE SET
  mapping_failed_outbound = activity_counts.mapping_failed_outbound
                            + excluded.mapping_failed_outbound
""")


async def count_mapping_failed(session: AsyncSession, env_id: uuid.UUID, n: int) -> None:
    """`n` messages accepted for Segment unmapped, their mapping having failed."""
    await session.execute(MAPPING_FAILED, {"env": str(env_id), "n": n})


def window_edge(at: datetime, now: datetime) -> datetime:
    """A ledger window's edge, on the counts' own grain: the minute, or the day (UTC) for times
    whose minutes are folded into days. A window counted on that grain sums exactly."""
    minute = at.astimezone(UTC).replace(second=0, microsecond=0)
    folded_before = (now.astimezone(UTC) - FOLD_AGE).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    return minute.replace(hour=0, minute=0) if minute < folded_before else minute


INBOUND_LEDGER = text("""
SELECT coalesce(sum(received), 0) AS received, coalesce(sum(stored), 0) AS stored,
       coalesce(sum(duplicates), 0) AS duplicates,
       coalesce(sum(refused_signature), 0) AS bad_signature,
       coalesce(sum(refused_invalid), 0) AS invalid,
       coalesce(sum(refused_too_large), 0) AS too_large,
       coalesce(sum(blocked_ids), 0) AS blocked_ids,
       coalesce(sum(mapping_failed_inbound), 0) AS mapping_failed,
       coalesce(sum(quarantined), 0) AS quarantined
FROM activity_counts
WHERE environment_id = :env AND bucket >= :since AND bucket < :until
""")


async def inbound_ledger(
    session: AsyncSession, env_id: uuid.UUID, since: datetime, until: datetime
) -> dict[str, Any]:
    """What the webhook received in [since, until) and what became of it: received = stored +
    duplicates + sum(refused) + quarantined, exactly (one transaction wrote each part; a
    release moves a message from quarantined to stored in the minute it was received). Outside
    the sums: `blocked_ids`, of the stored, those stored as anonymous because their userId was a
    blocked id; `mapping_failed`, of the stored, those stored unmapped because their mapping
    failed."""
    params = {"env": env_id, "since": since, "until": until}
    row = (await session.execute(INBOUND_LEDGER, params)).mappings().one()
    return {
        "received": int(row["received"]),
        "stored": int(row["stored"]),
        "duplicates": int(row["duplicates"]),
        "refused": {r: int(row[r]) for r in ("bad_signature", "invalid", "too_large")},
        "blocked_ids": int(row["blocked_ids"]),
        "mapping_failed": int(row["mapping_failed"]),
        "quarantined": int(row["quarantined"]),
    }


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
        await session.execute(FOLD_TO_DAYS)


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
