"""Delivering the outbox: claim due rows, send them in Segment-sized batches, record the answer.

Rows are claimed with `FOR UPDATE SKIP LOCKED` and stay locked while their request is in
flight, so two workers never send the same row at once. A worker that dies mid-request drops
its connection, the locks go with it, and the rows are still pending: the next claim resends
them with the same messageId, which Segment dedupes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from integration.config import Settings
from integration.crypto import SecretBox
from integration.environments.api_url import allowed
from integration.metrics import DELIVERY_LATENCY, SEGMENT_RESPONSES
from integration.outbound import segment
from integration.spec import MAX_MESSAGE_BYTES, too_large
from integration.store.db import SessionMaker, transaction

log = logging.getLogger(__name__)

LINGER_POLL_SECONDS = 0.05

CLAIM = text("""
SELECT o.id, o.payload, o.created_at, o.attempts
FROM outbox o
WHERE o.environment_id = CAST(:env AS uuid) AND o.status = 'pending'
  AND o.next_attempt_at <= now()
ORDER BY o.next_attempt_at, o.id
LIMIT :limit
FOR UPDATE SKIP LOCKED
""")

TARGET = text("""
SELECT segment_write_key, segment_api_url FROM environments
WHERE id = CAST(:env AS uuid) AND stream_enabled AND segment_write_key IS NOT NULL
""")

MARK_DELIVERED = text("""
UPDATE outbox SET status = 'delivered', delivered_at = now(), attempts = attempts + 1,
    response_status = :status, response_body = :body, last_error = NULL, updated_at = now()
WHERE id = ANY(:ids)
""")

MARK_DEAD = text("""
UPDATE outbox SET status = 'dead', attempts = attempts + 1, response_status = :status,
    response_body = :body, last_error = :error, updated_at = now()
WHERE id = ANY(:ids)
""")

# Rows older than the maximum age give up and go dead with the last error. The wait runs from
# Segment's answer (clock_timestamp()), not from the start of the transaction (now()): the
# request may have taken most of the timeout, and Retry-After counts from the response.
MARK_RETRY = text("""
UPDATE outbox SET attempts = attempts + 1, response_status = :status, response_body = :body,
    last_error = :error, updated_at = now(),
    status = CASE
        WHEN coalesce(replayed_at, created_at)
             < now() - make_interval(secs => CAST(:max_age AS float8)) THEN 'dead'
        ELSE 'pending' END,
    next_attempt_at = clock_timestamp() + make_interval(secs => CAST(:delay AS float8))
WHERE id = ANY(:ids)
""")


def retry_delay(settings: Settings, attempts: int, retry_after: float | None) -> float:
    """Exponential backoff with jitter on the upper half, never sooner than Retry-After. One
    delay per batch: rows that failed together retry together, in one request again."""
    backoff = settings.outbox_backoff_base_seconds * float(2 ** min(attempts, 30))
    jittered = min(settings.outbox_backoff_cap_seconds, backoff) * random.uniform(0.5, 1.0)
    return max(retry_after or 0.0, jittered)


# One round per environment at a time across all workers. A transaction-level advisory lock
# goes away at commit, or with the connection of a worker that died, so unlike a job id held in
# Redis it never outlives its holder; a delivery job that finds it taken has nothing to do.
ROUND_LOCK = text("SELECT pg_try_advisory_xact_lock(CAST(:key AS bigint))")


def round_lock_key(env_id: uuid.UUID) -> int:
    return int.from_bytes(env_id.bytes[:8], "big", signed=True)


@dataclass(frozen=True, slots=True)
class Target:
    api_url: str
    write_key: str


@dataclass(slots=True)
class Row:
    id: int
    encoded: bytes
    created_at: datetime
    attempts: int


@dataclass(slots=True)
class RoundResult:
    claimed: int = 0
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    error: str | None = None  # the last refusal or failure, for the worker's summary line


async def target(session: AsyncSession, env_id: uuid.UUID, box: SecretBox) -> Target | None:
    """Where this environment's events go, or None while its stream is off."""
    row = (await session.execute(TARGET, {"env": str(env_id)})).first()
    if row is None:
        return None
    return Target(api_url=row.segment_api_url, write_key=box.decrypt(row.segment_write_key))


async def deliver_round(
    sessions: SessionMaker,
    http: httpx.AsyncClient,
    settings: Settings,
    box: SecretBox,
    env_id: uuid.UUID,
) -> RoundResult:
    """Claim one set of due rows for an environment and send them. One transaction."""
    result = RoundResult()
    async with transaction(sessions) as session:
        if not await session.scalar(ROUND_LOCK, {"key": round_lock_key(env_id)}):
            return result  # another worker is delivering this environment right now
        where = await target(session, env_id, box)
        if where is None:
            return result
        claimed = await session.execute(
            CLAIM, {"env": str(env_id), "limit": settings.outbox_claim_limit}
        )
        rows = [Row(r.id, orjson.dumps(r.payload), r.created_at, r.attempts) for r in claimed]
        result.claimed = len(rows)
        rows = await _dead_letter_oversized(session, rows, result)
        batches = [[rows[i] for i in run] for run in segment.pack([len(r.encoded) for r in rows])]
        # The batches of a round are in flight together; their answers are recorded one by one
        # (one session), each batch by its own answer.
        answers = await asyncio.gather(*(_send(http, settings, where, b) for b in batches))
        for batch, answer in zip(batches, answers, strict=True):
            await _record(session, settings, batch, answer, result)
    return result


async def _send(
    http: httpx.AsyncClient, settings: Settings, where: Target, batch: list[Row]
) -> segment.Answer:
    """Send a batch, unless the host is no longer allowed (SEGMENT_API_ALLOWLIST changed, or a
    URL stored before the rule existed): then the rows are held as a failed attempt, retried
    on the backoff schedule and dead after OUTBOX_MAX_AGE_SECONDS, and the write key goes
    nowhere."""
    if not allowed(where.api_url, settings.segment_api_hosts):
        log.warning("holding a batch of %d: %s", len(batch), not_allowed(where.api_url))
        return segment.Answer("retry", None, error=not_allowed(where.api_url))
    encoded = [r.encoded for r in batch]
    return await segment.send_batch(
        http, where.api_url, where.write_key, encoded, timeout=settings.segment_timeout_seconds
    )


def not_allowed(api_url: str) -> str:
    return f"not sent: {api_url} is neither Segment's host nor in SEGMENT_API_ALLOWLIST"


async def _dead_letter_oversized(
    session: AsyncSession, rows: list[Row], result: RoundResult
) -> list[Row]:
    """A message over Segment's limit would fail its whole batch: it is never sent."""
    keep = [r for r in rows if len(r.encoded) <= MAX_MESSAGE_BYTES]
    for r in rows:
        if len(r.encoded) > MAX_MESSAGE_BYTES:
            await session.execute(
                MARK_DEAD,
                {"ids": [r.id], "status": None, "body": None, "error": too_large(len(r.encoded))},
            )
            result.dead += 1
    return keep


async def _record(
    session: AsyncSession,
    settings: Settings,
    batch: list[Row],
    answer: segment.Answer,
    result: RoundResult,
) -> None:
    ids = [r.id for r in batch]
    SEGMENT_RESPONSES.labels(str(answer.status) if answer.status else "error").inc()
    params: dict[str, Any] = {"ids": ids, "status": answer.status, "body": answer.body or None}
    if answer.outcome == "delivered":
        await session.execute(MARK_DELIVERED, params)
        now = datetime.now(UTC)
        for r in batch:
            DELIVERY_LATENCY.observe((now - r.created_at).total_seconds())
        result.delivered += len(ids)
    elif answer.outcome == "dead":
        result.error = "Segment refused the batch: " + answer.describe()
        await session.execute(MARK_DEAD, {**params, "error": result.error})
        result.dead += len(ids)
        log.warning("segment refused a batch of %d: HTTP %s", len(ids), answer.status)
    else:
        await session.execute(
            MARK_RETRY,
            {
                **params,
                "error": answer.describe(),
                "delay": retry_delay(settings, max(r.attempts for r in batch), answer.retry_after),
                "max_age": settings.outbox_max_age_seconds,
            },
        )
        result.retried += len(ids)
        result.error = answer.describe()
        # DEBUG: the worker's one line per delivery job carries the counts and this error.
        log.debug("batch of %d will be retried: %s", len(ids), answer.describe())


async def deliver(
    sessions: SessionMaker,
    http: httpx.AsyncClient,
    settings: Settings,
    box: SecretBox,
    env_id: uuid.UUID,
    *,
    budget_seconds: float = 60.0,
) -> RoundResult:
    """Deliver rounds until nothing has been due for the environment for a short while (or the
    time budget is spent). Lingering matters under a steady stream: while this job runs, its id
    is taken and new publishes cannot queue another one, so rows committed just after an empty
    claim would otherwise wait for the next sweep."""
    total = RoundResult()
    now = time.monotonic()
    deadline, idle_until = now + budget_seconds, now + settings.outbox_linger_seconds
    while (now := time.monotonic()) < deadline:
        r = await deliver_round(sessions, http, settings, box, env_id)
        total.claimed += r.claimed
        total.delivered += r.delivered
        total.retried += r.retried
        total.dead += r.dead
        total.error = r.error or total.error
        if r.retried:
            break  # Segment is failing: leave it to the backoff schedule
        if r.claimed:
            idle_until = now + settings.outbox_linger_seconds
        elif now >= idle_until:
            break
        else:
            await asyncio.sleep(LINGER_POLL_SECONDS)
    return total


DUE_ENVIRONMENTS = text("""
SELECT DISTINCT o.environment_id
FROM outbox o JOIN environments e ON e.id = o.environment_id
WHERE o.status = 'pending' AND o.next_attempt_at <= now()
  AND e.stream_enabled AND e.segment_write_key IS NOT NULL
""")


async def due_environments(sessions: SessionMaker) -> list[uuid.UUID]:
    async with sessions() as session:
        return list((await session.execute(DUE_ENVIRONMENTS)).scalars())
