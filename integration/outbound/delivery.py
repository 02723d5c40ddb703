"""Delivering the outbox: claim due rows, send them in Segment-sized batches, record the answer.

Rows are claimed with `FOR UPDATE SKIP LOCKED` and stay locked while their request is in
flight, so two workers never send the same row at once. A worker that dies mid-request drops
its connection, the locks go with it, and the rows are still pending: the next claim resends
them with the same messageId, which Segment dedupes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import orjson
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from integration.config import Settings
from integration.crypto import SecretBox
from integration.environments.api_url import allowed, not_allowed
from integration.environments.repository import delivery_target
from integration.metrics import DELIVERY_LATENCY, SEGMENT_RESPONSES
from integration.outbound import breaker, outbox, segment
from integration.store.db import SessionMaker, transaction

log = logging.getLogger(__name__)

LINGER_POLL_SECONDS = 0.05
PAUSED_MAX_AGE = 1e9  # seconds: a probe's row is held, not given up on
UNRECORDABLE = "failed; the answer could not be recorded"


def retry_delay(settings: Settings, attempts: int, retry_after: float | None) -> float:
    """Exponential backoff with jitter on the upper half, never sooner than Retry-After, and
    never later than the schedule's cap (OUTBOX_BACKOFF_CAP_SECONDS), whatever a remote host
    asks: `Retry-After: 1e30` would otherwise be a delay no database can record. One delay
    per batch: rows that failed together retry together, in one request again."""
    cap = settings.outbox_backoff_cap_seconds
    backoff = settings.outbox_backoff_base_seconds * float(2 ** min(attempts, 30))
    jittered = min(cap, backoff) * random.uniform(0.5, 1.0)
    asked = 0.0 if retry_after is None or math.isnan(retry_after) else retry_after
    return max(min(asked, cap), jittered)


@dataclass(frozen=True, slots=True)
class Destination:
    api_url: str
    write_key: str


@dataclass(slots=True)
class Row:
    id: int
    encoded: bytes
    created_at: datetime
    attempts: int
    identity: str | None = None  # the person whose order is kept (outbox.CLAIM)


@dataclass(slots=True)
class RoundResult:
    claimed: int = 0
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    error: str | None = None  # the last refusal or failure, for the worker's summary line
    paused: bool = False  # the breaker holds this environment's delivery (no probe due yet)


async def destination(
    session: AsyncSession, env_id: uuid.UUID, box: SecretBox
) -> Destination | None:
    """Where this environment's events go, or None while its stream is off."""
    found = await delivery_target(session, env_id)
    return Destination(found.api_url, box.decrypt(found.write_key)) if found else None


async def deliver_round(
    sessions: SessionMaker,
    http: httpx.AsyncClient,
    settings: Settings,
    box: SecretBox,
    env_id: uuid.UUID,
) -> RoundResult:
    """Claim one set of due rows for an environment and send them. One transaction. While the
    environment's breaker holds its delivery, only a probe (one held row, alone) is sent, when
    it is due."""
    result = RoundResult()
    async with transaction(sessions) as session:
        if not await outbox.lock_round(session, env_id):
            return result  # another worker is delivering this environment right now
        where = await destination(session, env_id, box)
        if where is None:
            return result
        held = await breaker.state(session, env_id)
        probing = held is not None and held.paused
        if held is not None and held.paused and not held.probe_due:
            result.paused = True
            return result
        if probing:
            await breaker.arm_probe(session, env_id)
        claimed = await outbox.claim(session, env_id, 1 if probing else settings.outbox_claim_limit)
        rows = [
            Row(r.id, orjson.dumps(r.payload), r.created_at, r.attempts, r.identity_key)
            for r in claimed
        ]
        result.claimed = len(rows)
        batches = one_batch_per_person(
            [[rows[i] for i in run] for run in segment.pack([len(r.encoded) for r in rows])]
        )
        # The batches of a round are in flight together (at most OUTBOX_ENV_CONCURRENCY, so a
        # hanging Segment never holds all of the worker's connections); their answers are
        # recorded one by one (one session), each batch by its own answer.
        limiter = asyncio.Semaphore(settings.outbox_env_concurrency)

        async def send(batch: list[Row]) -> segment.Answer:
            async with limiter:
                return await _send(http, settings, where, batch)

        answers = await asyncio.gather(*(send(b) for b in batches))
        # Paused, a row never goes dead for its age: held rows are kept until Segment is back.
        max_age = PAUSED_MAX_AGE if probing else float(settings.outbox_max_age_seconds)
        for batch, answer in zip(batches, answers, strict=True):
            await _record(session, settings, (env_id, batch), answer, result, max_age=max_age)
        await _count(session, settings, env_id, held, answers, result.error)
    return result


async def _count(
    session: AsyncSession,
    settings: Settings,
    env_id: uuid.UUID,
    held: breaker.State | None,
    answers: list[segment.Answer],
    error: str | None,
) -> None:
    """The round, as the breaker counts it: Segment answered (any batch accepted or refused),
    or every batch failed."""
    if not answers:
        return
    if any(a.outcome != "retry" for a in answers):
        if held is not None and (held.failing_since is not None or held.paused):
            await breaker.succeeded(session, env_id)
    else:
        await breaker.failed(session, settings, env_id, error)


def one_batch_per_person(batches: list[list[Row]]) -> list[list[Row]]:
    """A round's batches are in flight together, so two of them may arrive in either order,
    and one may fail while the other succeeds. Each person's rows therefore travel in the first
    batch that holds any of them; the rest of that person's rows are left pending (locked and
    unsent until the round ends) for the next round, which sends them once the first are
    delivered, or holds them while those wait for their retry."""
    first: dict[str, int] = {}
    kept: list[list[Row]] = []
    for index, batch in enumerate(batches):
        for r in batch:
            if r.identity is not None:
                first.setdefault(r.identity, index)
        rows = [r for r in batch if r.identity is None or first[r.identity] == index]
        if rows:
            kept.append(rows)
    return kept


async def _send(
    http: httpx.AsyncClient, settings: Settings, where: Destination, batch: list[Row]
) -> segment.Answer:
    """Send a batch, unless the host is no longer allowed (SEGMENT_API_ALLOWLIST changed, or a
    URL stored before the rule existed): then the rows are held as a failed attempt, retried
    on the backoff schedule and dead after OUTBOX_MAX_AGE_SECONDS, and the write key goes
    nowhere."""
    if not allowed(where.api_url, settings.segment_api_hosts):
        held = f"not sent: {not_allowed(where.api_url)}"
        log.warning("holding a batch of %d: %s", len(batch), held)
        return segment.Answer("retry", None, error=held)
    encoded = [r.encoded for r in batch]
    return await segment.send_batch(
        http, where.api_url, where.write_key, encoded, timeout=settings.segment_timeout_seconds
    )


async def _record(
    session: AsyncSession,
    settings: Settings,
    sent: tuple[uuid.UUID, list[Row]],
    answer: segment.Answer,
    result: RoundResult,
    *,
    max_age: float,
) -> None:
    env_id, batch = sent
    ids = [r.id for r in batch]
    SEGMENT_RESPONSES.labels(str(answer.status) if answer.status else "error").inc()
    if answer.outcome == "delivered":
        await outbox.mark_delivered(
            session, (env_id, ids), outbox.AnswerRecord(answer.status, answer.body)
        )
        now = datetime.now(UTC)
        for r in batch:
            DELIVERY_LATENCY.observe((now - r.created_at).total_seconds())
        result.delivered += len(ids)
    elif answer.outcome == "dead":
        result.error = "Segment refused the batch: " + answer.describe()
        await outbox.mark_dead(
            session, (env_id, ids), outbox.AnswerRecord(answer.status, answer.body, result.error)
        )
        result.dead += len(ids)
        log.warning("segment refused a batch of %d: HTTP %s", len(ids), answer.status)
    else:
        # The error as recorded: the breaker keeps it too, so it must be storable there.
        result.error = await _record_retry(
            session, settings, (env_id, batch), answer, max_age=max_age
        )
        result.retried += len(ids)
        # DEBUG: the worker's one line per delivery job carries the counts and this error.
        log.debug("batch of %d will be retried: %s", len(ids), answer.describe())


async def _record_retry(
    session: AsyncSession,
    settings: Settings,
    sent: tuple[uuid.UUID, list[Row]],
    answer: segment.Answer,
    *,
    max_age: float,
) -> str:
    """Count the failed attempt; returns the error as recorded. Should what the remote host
    answered not be recordable, the attempt is counted all the same, without it: a row that
    could not be recorded would stay due, be sent again every sweep and never reach
    OUTBOX_MAX_AGE_SECONDS's dead end."""
    env_id, batch = sent
    rows = (env_id, [r.id for r in batch])
    delay = retry_delay(settings, max(r.attempts for r in batch), answer.retry_after)
    try:
        async with session.begin_nested():  # a savepoint: the round's other batches stand
            kept = outbox.AnswerRecord(answer.status, answer.body, answer.describe())
            await outbox.mark_retry(session, rows, kept, delay=delay, max_age=max_age)
            return answer.describe()
    except DBAPIError as exc:
        log.error(
            "could not record a failed attempt of %d rows as answered (%s); recorded without"
            " the answer",
            len(batch),
            type(exc.orig).__name__,
        )
        bare = outbox.AnswerRecord(answer.status, None, UNRECORDABLE)
        cap = settings.outbox_backoff_cap_seconds
        await outbox.mark_retry(session, rows, bare, delay=cap, max_age=max_age)
        return UNRECORDABLE


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
        if r.retried or r.paused:
            break  # Segment is failing: leave it to the backoff schedule, or the breaker
        if r.claimed:
            idle_until = now + settings.outbox_linger_seconds
        elif now >= idle_until:
            break
        else:
            await asyncio.sleep(LINGER_POLL_SECONDS)
    return total
