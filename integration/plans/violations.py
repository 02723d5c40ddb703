"""Violations counted by environment, direction, event, property and rule, with the latest
value at fault: what the console and the API show of a plan's violations, whatever became of
the messages. Written in the transaction that stores or queues the messages."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

import asyncpg
import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from integration.plans.check import Violation
from integration.store.models import PlanViolation

# Names as stored: a key column, so a name of any length a message carried is cut to this.
MAX_KEY_CHARS = 256
MAX_LISTED = 500

# One statement for a batch's violations, folded per key before they reach the database (an
# INSERT ... ON CONFLICT cannot touch the same row twice) and sorted, so that two
# transactions counting the same keys lock them in the same order and never deadlock.
RECORD = """
INSERT INTO plan_violations AS v (environment_id, direction, event, property, rule, count, sample)
SELECT CAST($1 AS uuid), $2, t.event, t.property, t.rule, t.count, CAST(t.sample AS jsonb)
FROM unnest(CAST($3 AS text[]), CAST($4 AS text[]), CAST($5 AS text[]), CAST($6 AS bigint[]),
            CAST($7 AS text[])) AS t(event, property, rule, count, sample)
-- excluded.last_seen_at is the column's default, now(): on Citus the DO UPDATE clause may call
-- only immutable functions (the default is evaluated on the coordinator).
ON CONFLICT (environment_id, direction, event, property, rule) DO UPDATE SET
  count = v.count + excluded.count, sample = excluded.sample,
  last_seen_at = excluded.last_seen_at
"""


async def record(
    pg: asyncpg.Connection, env_id: uuid.UUID, direction: str, found: Iterable[Violation]
) -> None:
    """Count these violations (of any number of messages) in the caller's transaction."""
    folded: dict[tuple[str, str, str], tuple[int, Any]] = {}
    for v in found:
        key = (v.event[:MAX_KEY_CHARS], (v.property or "")[:MAX_KEY_CHARS], v.rule)
        count, _ = folded.get(key, (0, None))
        folded[key] = (count + 1, v.sample)
    if not folded:
        return
    keys = sorted(folded)
    await pg.execute(
        RECORD,
        env_id,
        direction,
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
        [folded[k][0] for k in keys],
        [orjson.dumps(folded[k][1]).decode() for k in keys],
    )


async def summary(session: AsyncSession, env_id: uuid.UUID, direction: str) -> list[PlanViolation]:
    """The most frequent violations first (at most MAX_LISTED)."""
    rows = await session.scalars(
        select(PlanViolation)
        .where(PlanViolation.environment_id == env_id, PlanViolation.direction == direction)
        .order_by(PlanViolation.count.desc(), PlanViolation.event, PlanViolation.property)
        .limit(MAX_LISTED)
    )
    return list(rows)
