"""Every statement on the outbox, the one table the outbound side owns: rows in (publish),
claimed and marked (delivery), listed, replayed and counted (admin), purged (housekeeping).

The outbox is the truth of what Segment still has to receive; Redis only says "look now". A
row is written in the transaction of whatever produced its event, so a crash never loses one.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, String, any_, cast, func, literal, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from integration.metrics import OUTBOUND_LEDGER, OUTBOX_MESSAGES, OUTBOX_PAUSED, children
from integration.outbound.jobs import wake_delivery
from integration.spec import MAX_MESSAGE_BYTES
from integration.store import activity
from integration.store.db import SessionMaker, transaction
from integration.store.models import DELIVERY_STATUSES, DeliveryAttempt, OutboxMessage, Replay

log = logging.getLogger(__name__)

# --- in ---------------------------------------------------------------------------------------

# Rows travel as one JSON array (each payload is spliced in as the bytes it was encoded to once);
# a redelivered messageId is acknowledged and changes nothing. `identity_key` names the person
# whose order delivery keeps (userId, else anonymousId; see CLAIM).
INSERT = text("""
INSERT INTO outbox (environment_id, message_id, type, payload, size_bytes, status, last_error,
                    identity_key, mapping_error)
SELECT CAST(:env AS uuid), r.message_id, r.type, r.payload, r.size_bytes, r.status, r.last_error,
       coalesce(r.payload ->> 'userId', r.payload ->> 'anonymousId'), r.mapping_error
FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(
    message_id text, type text, payload jsonb, size_bytes int, status text, last_error text,
    mapping_error text)
ON CONFLICT (environment_id, message_id) DO NOTHING
RETURNING message_id
""")


async def insert(session: AsyncSession, env_id: uuid.UUID, rows: bytes) -> set[str]:
    """Insert rows (a JSON array of message_id, type, payload, size_bytes, status, last_error,
    mapping_error);
    returns the messageIds that were new."""
    inserted = await session.execute(INSERT, {"env": str(env_id), "rows": rows.decode()})
    new = set(inserted.scalars())
    _ledger("accepted", "").inc(len(new))
    return new


# --- delivery ---------------------------------------------------------------------------------

# One round per environment at a time across all workers. A transaction-level advisory lock
# goes away at commit, or with the connection of a worker that died, so unlike a job id held in
# Redis it never outlives its holder; a delivery job that finds it taken has nothing to do.
ROUND_LOCK = text("SELECT pg_try_advisory_xact_lock(CAST(:key AS bigint))")

# Claimed rows stay locked while their request is in flight, so two workers never send the same
# row at once; a worker that dies drops its connection and the locks go with it.
#
# Per-person order (the same identity_key: userId, else anonymousId): no message reaches
# Segment before an older pending one of the same person. Oldest first by id, and
# - `waiting`: each person's oldest row waiting for its retry (next_attempt_at still ahead: a
#   failed batch's). Nothing of that person from there on is a candidate; it goes first when
#   it is due.
# - `skipped`: each person's oldest due row that SKIP LOCKED passed over (another worker's
#   batch in flight, or a replay's UPDATE): the rows below the newest one claimed that were
#   not claimed. That person's claimed rows from there on are not sent: they stay locked,
#   unsent and pending until this round ends. (The LIMIT only ever leaves out newer rows.)
# Both are read once per claim, materialized (`waiting` through ix_outbox_due, `skipped`
# the id range the claim itself read): whatever the statistics say, no row's check re-reads
# the others, so one person with thousands of rows costs no more than thousands of people.
# The candidates stream in id order and stop at the LIMIT (measured: 200,000 due rows, 2,000
# claimed, 109 ms; a join to `waiting` instead of NOT EXISTS made the planner read and sort
# them all, 162 ms). A dead row is final and holds no one back; a row with no identity_key
# has no order to keep. Scanning by id passes over the rows waiting for a retry: few while
# Segment answers, and while it does not, the breaker stops the rounds that would scan them.
CLAIM = text("""
WITH waiting AS MATERIALIZED (
    SELECT identity_key, min(id) AS first_id
    FROM outbox
    WHERE environment_id = CAST(:env AS uuid) AND status = 'pending' AND next_attempt_at > now()
    GROUP BY identity_key
),
claimed AS (
    SELECT o.id, o.identity_key, o.payload, o.created_at, o.attempts
    FROM outbox o
    WHERE o.environment_id = CAST(:env AS uuid) AND o.status = 'pending'
      AND o.next_attempt_at <= now()
      AND NOT EXISTS (SELECT 1 FROM waiting w
                      WHERE w.identity_key = o.identity_key AND w.first_id < o.id)
    ORDER BY o.id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
),
skipped AS MATERIALIZED (
    SELECT s.identity_key, min(s.id) AS first_id
    FROM outbox s
    WHERE s.environment_id = CAST(:env AS uuid) AND s.status = 'pending'
      AND s.next_attempt_at <= now()
      AND s.id < (SELECT max(id) FROM claimed)
      AND s.id NOT IN (SELECT id FROM claimed)
    GROUP BY s.identity_key
)
SELECT c.id, c.identity_key, c.payload, c.created_at, c.attempts
FROM claimed c LEFT JOIN skipped g ON g.identity_key = c.identity_key
WHERE g.first_id IS NULL OR c.id < g.first_id
ORDER BY c.id
""")

MARK_DELIVERED = text("""
UPDATE outbox SET status = 'delivered', delivered_at = now(), attempts = attempts + 1,
    response_status = :status, response_body = :body, last_error = NULL, updated_at = now()
WHERE environment_id = CAST(:env AS uuid) AND id = ANY(:ids)
""")

MARK_DEAD = text("""
UPDATE outbox SET status = 'dead', attempts = attempts + 1, response_status = :status,
    response_body = :body, last_error = :error, updated_at = now()
WHERE environment_id = CAST(:env AS uuid) AND id = ANY(:ids)
""")

# Rows older than the maximum age give up and go dead with the last error. The wait runs from
# Segment's answer (statement_timestamp(): this statement starts once the answer is in; not
# clock_timestamp(), which Citus refuses in an UPDATE as volatile), not from the start of the
# transaction (now()): the
# request may have taken most of the timeout, and Retry-After counts from the response.
MARK_RETRY = text("""
UPDATE outbox SET attempts = attempts + 1, response_status = :status, response_body = :body,
    last_error = :error, updated_at = now(),
    -- The cutoff is a subquery: Citus refuses a non-immutable function (now()) inside a CASE.
    status = CASE
        WHEN coalesce(replayed_at, created_at)
             < (SELECT now() - make_interval(secs => CAST(:max_age AS float8))) THEN 'dead'
        ELSE 'pending' END,
    next_attempt_at = statement_timestamp() + make_interval(secs => CAST(:delay AS float8))
WHERE environment_id = CAST(:env AS uuid) AND id = ANY(:ids)
""")

# Streaming environments with rows due, except those whose breaker paused them; and those,
# once their next probe is due, if they hold any row (integration/outbound/breaker.py).
DUE_ENVIRONMENTS = text("""
SELECT DISTINCT o.environment_id
FROM outbox o JOIN environments e ON e.id = o.environment_id
WHERE o.status = 'pending' AND o.next_attempt_at <= now()
  AND e.stream_enabled AND e.segment_write_key IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM outbox_breakers b
                  WHERE b.environment_id = o.environment_id AND b.paused_at IS NOT NULL)
UNION
SELECT b.environment_id
FROM outbox_breakers b JOIN environments e ON e.id = b.environment_id
WHERE b.paused_at IS NOT NULL AND b.probe_at <= now()
  AND e.stream_enabled AND e.segment_write_key IS NOT NULL
  AND EXISTS (SELECT 1 FROM outbox o WHERE o.environment_id = b.environment_id
                                       AND o.status = 'pending')
""")


RowIds = tuple[uuid.UUID, Sequence[int]]  # an environment, and ids of its outbox rows


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    identity_key: str | None
    payload: dict[str, Any]
    created_at: datetime
    attempts: int


@dataclass(frozen=True, slots=True)
class AnswerRecord:
    """What Segment said about a batch, as the outbox keeps it."""

    status: int | None
    body: str | None
    error: str | None = None


def round_lock_key(env_id: uuid.UUID) -> int:
    return int.from_bytes(env_id.bytes[:8], "big", signed=True)


async def lock_round(session: AsyncSession, env_id: uuid.UUID) -> bool:
    """Take this environment's delivery round for this transaction; False if another has it."""
    return bool(await session.scalar(ROUND_LOCK, {"key": round_lock_key(env_id)}))


async def claim(session: AsyncSession, env_id: uuid.UUID, limit: int) -> list[Claimed]:
    rows = await session.execute(CLAIM, {"env": str(env_id), "limit": limit})
    return [Claimed(r.id, r.identity_key, r.payload, r.created_at, r.attempts) for r in rows]


# Rows are named by (environment_id, id), the primary key: by id alone no index serves them.


async def mark_delivered(session: AsyncSession, rows: RowIds, answer: AnswerRecord) -> None:
    await session.execute(MARK_DELIVERED, {**_params(rows, answer)})
    await record_attempts(session, rows, answer)


async def mark_dead(session: AsyncSession, rows: RowIds, answer: AnswerRecord) -> None:
    await session.execute(MARK_DEAD, {**_params(rows, answer), "error": answer.error})
    await record_attempts(session, rows, answer)


async def mark_retry(
    session: AsyncSession, rows: RowIds, answer: AnswerRecord, *, delay: float, max_age: float
) -> None:
    params = {**_params(rows, answer), "error": answer.error}
    await session.execute(MARK_RETRY, {**params, "delay": delay, "max_age": max_age})
    await record_attempts(session, rows, answer)


# Each attempt, as the row now stands after its mark (a retry past the maximum age is dead),
# in the round's transaction: the trace of a message shows every one with Segment's status.
RECORD_ATTEMPTS = text("""
INSERT INTO delivery_attempts (environment_id, outbox_id, outcome, status, error)
SELECT environment_id, id,
       CASE status WHEN 'pending' THEN 'retry' ELSE status END, :status, :error
FROM outbox WHERE environment_id = CAST(:env AS uuid) AND id = ANY(:ids)
RETURNING outcome, status
""")


async def record_attempts(session: AsyncSession, rows: RowIds, answer: AnswerRecord) -> None:
    env, ids = rows
    recorded = await session.execute(
        RECORD_ATTEMPTS,
        {"env": str(env), "ids": list(ids), "status": answer.status, "error": answer.error},
    )
    for outcome, status in recorded:
        if outcome == "delivered":
            _ledger("delivered", "").inc()
        elif outcome == "dead":
            _ledger("dead", str(status) if status else "no_answer").inc()


_ledger = children(OUTBOUND_LEDGER)


def _params(rows: RowIds, answer: AnswerRecord) -> dict[str, Any]:
    env, ids = rows
    return {"env": str(env), "ids": list(ids), "status": answer.status, "body": answer.body or None}


async def due_environments(sessions: SessionMaker) -> list[uuid.UUID]:
    """Environments streaming with rows due now: the worker's sweep queues a job for each."""
    async with sessions() as session:
        return list((await session.execute(DUE_ENVIRONMENTS)).scalars())


# --- the admin API ----------------------------------------------------------------------------


async def list_deliveries(
    session: AsyncSession,
    env_id: uuid.UUID,
    *,
    status: str | None,
    before_id: int | None,
    limit: int,
) -> list[OutboxMessage]:
    """Newest first; `before_id` is the last id of the previous page."""
    stmt = select(OutboxMessage).where(OutboxMessage.environment_id == env_id)
    if status:
        stmt = stmt.where(OutboxMessage.status == status)
    if before_id:
        stmt = stmt.where(OutboxMessage.id < before_id)
    return list(await session.scalars(stmt.order_by(OutboxMessage.id.desc()).limit(limit)))


WAITING = text("""
SELECT (SELECT count(*) FROM outbox WHERE environment_id = :env AND status = 'pending')
           AS outbound_pending,
       (SELECT count(*) FROM outbox WHERE environment_id = :env AND status = 'dead')
           AS outbound_dead
""")


async def counts(session: AsyncSession, env_id: uuid.UUID) -> dict[str, Any]:
    """The environment's pending and dead rows (few, counted), deliveries made and the last
    one (from the activity counts: delivered rows are the many)."""
    waiting = dict((await session.execute(WAITING, {"env": env_id})).mappings().one())
    totals = await activity.totals(session, env_id)
    return {
        **waiting,
        "outbound_delivered": totals["outbound_delivered"],
        "last_outbound_at": totals["last_outbound_at"],
    }


# --- the console -------------------------------------------------------------------------------

# Pending and dead rows, through ix_outbox_env_status_id: an environment holds few of them
# next to its delivered ones (which `delivered_per_minute` counts by time, never all of them).
# "Dead in the last hour": went dead then.
WINDOW_COUNTS = text("""
SELECT p.*, x.* FROM
  (SELECT count(*) AS pending,
          count(*) FILTER (WHERE created_at >= now() - interval '1 hour') AS pending_hour,
          count(*) FILTER (WHERE created_at >= now() - interval '1 day') AS pending_day
   FROM outbox WHERE environment_id = :env AND status = 'pending') p,
  (SELECT count(*) AS dead,
          count(*) FILTER (WHERE updated_at >= now() - interval '1 hour') AS dead_hour,
          count(*) FILTER (WHERE updated_at >= now() - interval '1 day') AS dead_day
   FROM outbox WHERE environment_id = :env AND status = 'dead') x
""")


async def window_counts(session: AsyncSession, env_id: uuid.UUID) -> dict[str, int]:
    """Pending and dead over the last hour and day, and now."""
    return dict((await session.execute(WINDOW_COUNTS, {"env": env_id})).mappings().one())


async def delivered_per_minute(
    session: AsyncSession, env_id: uuid.UUID, since: datetime
) -> dict[datetime, int]:
    """Deliveries per minute since `since`, from the activity counts."""
    minutes = await activity.per_minute(session, env_id, since)
    return {minute: delivered for minute, _, delivered in minutes if delivered}


# The rows of one batch were marked together, in one statement with one answer: they share
# the time (the round's transaction), the status and Segment's answer. Each branch reads at
# most BATCH_ROWS recent rows of its status through an index, so the page's cost is bounded
# however large the outbox; a batch cut by that bound shows fewer events than it had.
RECENT_BATCHES = text("""
SELECT at, outcome, response_status, answer, count(*) AS events FROM (
  (SELECT delivered_at AS at, 'delivered' AS outcome, response_status, response_body AS answer
   FROM outbox WHERE environment_id = :env AND status = 'delivered'
   ORDER BY delivered_at DESC LIMIT :rows)
  UNION ALL
  (SELECT updated_at, 'dead', response_status, coalesce(last_error, response_body)
   FROM outbox WHERE environment_id = :env AND status = 'dead' ORDER BY id DESC LIMIT :rows)
  UNION ALL
  (SELECT updated_at, 'retrying', response_status, last_error FROM (
     SELECT * FROM outbox WHERE environment_id = :env AND status = 'pending'
     ORDER BY id DESC LIMIT :rows) p
   WHERE attempts > 0)
) r
GROUP BY at, outcome, response_status, answer
ORDER BY at DESC
LIMIT :limit
""")
BATCH_ROWS = 5000


@dataclass(frozen=True, slots=True)
class Batch:
    at: datetime
    outcome: str  # delivered, dead or retrying
    response_status: int | None
    answer: str | None  # Segment's kept answer fields, or our error (never a raw remote body)
    events: int


async def recent_batches(session: AsyncSession, env_id: uuid.UUID, limit: int) -> list[Batch]:
    rows = await session.execute(
        RECENT_BATCHES, {"env": env_id, "rows": BATCH_ROWS, "limit": limit}
    )
    return [Batch(*row) for row in rows.tuples()]


async def last_deliveries(
    session: AsyncSession, env_ids: list[uuid.UUID]
) -> dict[uuid.UUID, datetime | None]:
    """When Segment last accepted each environment's events, from the activity counts."""
    return {
        env_id: last.delivered for env_id, last in (await activity.last(session, env_ids)).items()
    }


OUTBOX_BY_STATUS = text("SELECT status, count(*) FROM outbox GROUP BY status")
PAUSED_ENVIRONMENTS = text("SELECT count(*) FROM outbox_breakers WHERE paused_at IS NOT NULL")


async def refresh_gauges(sessions: SessionMaker) -> None:
    """The outbox's state is in Postgres, so its gauges are read there, at scrape time. The
    worker's own counters (Segment responses, delivery latency) are on WORKER_METRICS_PORT."""
    try:
        async with transaction(sessions) as session:
            await session.execute(text("SET LOCAL statement_timeout = '2s'"))
            rows = (await session.execute(OUTBOX_BY_STATUS)).all()
            paused = int((await session.execute(PAUSED_ENVIRONMENTS)).scalar_one())
    except Exception as exc:  # metrics must still answer while the database is away
        log.warning("outbox gauges unavailable: %s", type(exc).__name__)
        return
    by_status: dict[str, int] = {status: count for status, count in rows}
    for status in DELIVERY_STATUSES:
        OUTBOX_MESSAGES.labels(status).set(by_status.get(status, 0))
    OUTBOX_PAUSED.set(paused)


# --- housekeeping -----------------------------------------------------------------------------

PURGE_BATCH = 5000

# Oldest first through the partial index on delivered_at; a bounded batch per transaction, so a
# backlog of millions never becomes one giant DELETE that holds locks and bloats the WAL.
PURGE_DELIVERED = text("""
DELETE FROM outbox WHERE (environment_id, id) IN (
    SELECT environment_id, id FROM outbox
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


# --- the ledger, the trace, replays by filter --------------------------------------------------

# Accepted rows (counted at enqueue by the trigger of migration 0009, by the minute each was
# created) against the current state of the rows created in the same window: pending and dead
# are the few (ix_outbox_env_status_id), delivered is what remains (a delivered row purged by
# retention stays counted; an undelivered row erased is taken back by the trigger). Pending rows
# are held while the environment cannot stream (switched off, no write key) or its host is no
# longer allowed (the worker marks those "not sent: ..."). A message the tracking plan held
# whole never entered the outbox: it is accepted and quarantined while its quarantine row (by
# the time it was held) is not released (still held, or discarded); released, it entered the
# outbox then, and is counted there, when it was released. One statement, one snapshot: the
# sums hold even while rows move.
LEDGER = text("""
SELECT 'accepted' AS state, NULL AS answer, coalesce(sum(accepted), 0) AS n
FROM activity_counts
WHERE environment_id = :env AND bucket >= :since AND bucket < :until
UNION ALL
SELECT 'mapping_failed', NULL, coalesce(sum(mapping_failed_outbound), 0)
FROM activity_counts
WHERE environment_id = :env AND bucket >= :since AND bucket < :until
UNION ALL
SELECT CASE WHEN status = 'pending'
             AND (NOT :streaming OR coalesce(last_error, '') LIKE 'not sent%') THEN 'held'
            ELSE status END,
       CASE WHEN status = 'dead' THEN coalesce(CAST(response_status AS text),
            CASE WHEN size_bytes > :max_bytes THEN 'too_large' ELSE 'no_answer' END) END,
       count(*)
FROM outbox
WHERE environment_id = :env AND status IN ('pending', 'dead')
  AND created_at >= :since AND created_at < :until
GROUP BY 1, 2
UNION ALL
SELECT 'quarantined', NULL, count(*)
FROM quarantine
WHERE environment_id = :env AND direction = 'outbound' AND state <> 'released'
  AND received_at >= :since AND received_at < :until
""")


@dataclass(frozen=True, slots=True)
class Ledger:
    accepted: int
    delivered: int
    pending: int
    held: int
    dead: dict[str, int]
    mapping_failed: int  # of those accepted, accepted unmapped: outside the sum
    quarantined: int = 0  # held whole by the tracking plan, never in the outbox

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "delivered": self.delivered,
            "pending": self.pending,
            "held": self.held,
            "dead": self.dead,
            "mapping_failed": self.mapping_failed,
            "quarantined": self.quarantined,
        }


async def ledger(
    session: AsyncSession,
    env_id: uuid.UUID,
    *,
    since: datetime,
    until: datetime,
    streaming: bool,
) -> Ledger:
    """Outbound messages accepted in [since, until) and what became of them; delivered is the
    rest, so accepted = delivered + pending + held + sum(dead) + quarantined exactly."""
    params = {
        "env": env_id,
        "since": since,
        "until": until,
        "streaming": streaming,
        "max_bytes": MAX_MESSAGE_BYTES,
    }
    accepted, pending, held, mapping_failed, quarantined = 0, 0, 0, 0, 0
    dead: dict[str, int] = {}
    for state, answer, n in await session.execute(LEDGER, params):
        if state == "accepted":
            accepted += int(n)
        elif state == "mapping_failed":
            mapping_failed = int(n)
        elif state == "quarantined":
            quarantined = int(n)
            accepted += quarantined
        elif state == "pending":
            pending += int(n)
        elif state == "held":
            held += int(n)
        else:
            dead[str(answer)] = dead.get(str(answer), 0) + int(n)
    delivered = accepted - pending - held - sum(dead.values()) - quarantined
    return Ledger(accepted, delivered, pending, held, dead, mapping_failed, quarantined)


@dataclass(frozen=True, slots=True)
class Attempt:
    at: datetime
    outcome: str  # delivered, retry, dead, or replayed
    status: int | None  # Segment's HTTP status (None: no answer)
    error: str | None


@dataclass(frozen=True, slots=True)
class Trace:
    row: OutboxMessage
    attempts: list[Attempt]


async def trace(session: AsyncSession, env_id: uuid.UUID, message_id: str) -> Trace | None:
    """An outbound message's row and each attempt at it (and each replay), oldest first."""
    row = await session.scalar(
        select(OutboxMessage).where(
            OutboxMessage.environment_id == env_id, OutboxMessage.message_id == message_id
        )
    )
    if row is None:
        return None
    attempts = await session.execute(
        select(
            DeliveryAttempt.attempted_at,
            DeliveryAttempt.outcome,
            DeliveryAttempt.status,
            DeliveryAttempt.error,
        )
        .where(DeliveryAttempt.environment_id == env_id, DeliveryAttempt.outbox_id == row.id)
        .order_by(DeliveryAttempt.id)
    )
    return Trace(
        row, [Attempt(at, outcome, status, error) for at, outcome, status, error in attempts]
    )


def _at(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def outbound_steps(found: Trace, *, streaming: bool) -> tuple[list[dict[str, Any]], str]:
    row = found.row
    steps: list[dict[str, Any]] = [
        {
            "at": _at(row.created_at),
            "direction": "outbound",
            "step": "accepted",
            "type": row.type,
            "event": row.payload.get("event") or row.payload.get("name"),
        }
    ]
    if row.mapping_error is not None:
        steps[0]["mapping_error"] = f"accepted unmapped: {row.mapping_error}"
    for a in found.attempts:
        steps.append(
            {
                "at": _at(a.at),
                "direction": "outbound",
                "step": a.outcome,
                "segment_status": a.status,
                "detail": a.error,
            }
        )
    state = row.status
    if state == "pending" and (not streaming or (row.last_error or "").startswith("not sent")):
        state = "held"
    if state == "dead" and not any(a.outcome == "dead" for a in found.attempts):
        # Dead on arrival (over Segment's size limit): never sent.
        steps.append(
            {
                "at": _at(row.updated_at),
                "direction": "outbound",
                "step": "dead",
                "segment_status": None,
                "detail": row.last_error,
            }
        )
    return steps, state


# A replay is bounded: at most this many rows per call (the answer says whether more matched;
# call again for the next ones: the rows already queued no longer match).
REPLAY_MAX_ROWS = 1000
REPLAY_SAMPLE = 10
REPLAYABLE = ("dead", "delivered")


@dataclass(frozen=True, slots=True)
class ReplayFilter:
    status: str = "dead"
    since: datetime | None = None
    until: datetime | None = None
    event: str | None = None
    type: str | None = None
    user_id: str | None = None
    ids: list[int] | None = None
    message_ids: list[str] | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status}
        for name in ("event", "type", "user_id", "ids", "message_ids"):
            if (value := getattr(self, name)) is not None:
                out[name] = value
        if self.since is not None:
            out["from"] = self.since.isoformat()
        if self.until is not None:
            out["to"] = self.until.isoformat()
        return out


@dataclass(frozen=True, slots=True)
class Replayed:
    matched: int  # rows the filter matches now, counted up to limit + 1
    queued: int  # rows queued (or, in a dry run, that would be)
    dry_run: bool
    sample: list[OutboxMessage]
    limit: int = REPLAY_MAX_ROWS

    @property
    def more(self) -> bool:
        return self.matched > self.queued


def _matching(env_id: uuid.UUID, f: ReplayFilter) -> Any:
    """The rows a filter names, oldest first. A message over Segment's size limit stays dead:
    it could never be delivered, and sent it would fail the whole batch it travels in."""
    # The status as a sub-select's value: the planner cannot prove the partial indexes' own
    # `status = 'delivered'` from it, so it walks one environment's rows of that status
    # (ix_outbox_env_status_id) instead of the delivered rows of every environment.
    status = select(literal(f.status, String)).scalar_subquery()
    stmt = select(OutboxMessage).where(
        OutboxMessage.environment_id == env_id,
        OutboxMessage.status == status,
        OutboxMessage.size_bytes <= MAX_MESSAGE_BYTES,
    )
    if f.since is not None:
        stmt = stmt.where(OutboxMessage.created_at >= f.since)
    if f.until is not None:
        stmt = stmt.where(OutboxMessage.created_at < f.until)
    if f.type is not None:
        stmt = stmt.where(OutboxMessage.type == f.type)
    if f.event is not None:
        stmt = stmt.where(OutboxMessage.payload["event"].astext == f.event)
    if f.user_id is not None:
        stmt = stmt.where(
            OutboxMessage.payload.has_key("userId"),
            OutboxMessage.payload["userId"].astext == f.user_id,
        )
    if f.ids is not None:
        stmt = stmt.where(OutboxMessage.id.in_(f.ids))
    if f.message_ids is not None:
        stmt = stmt.where(OutboxMessage.message_id.in_(f.message_ids))
    return stmt


# Oldest first in the order of ix_outbox_env_status_id, so that the planner walks that index
# (one environment's rows of one status) rather than a status index of every environment.
IN_INDEX_ORDER = (OutboxMessage.environment_id, OutboxMessage.status, OutboxMessage.id)

REPLAYED_ATTEMPTS = text("""
INSERT INTO delivery_attempts (environment_id, outbox_id, outcome, error)
SELECT CAST(:env AS uuid), id, 'replayed', :by FROM unnest(CAST(:ids AS bigint[])) AS id
""")


async def replay_filtered(
    session: AsyncSession,
    env_id: uuid.UUID,
    f: ReplayFilter,
    *,
    dry_run: bool,
    actor: str,
    limit: int = REPLAY_MAX_ROWS,
) -> Replayed:
    """Rows matching `f` pending again (their messageIds kept, so Segment dedupes a re-send of
    delivered ones) with a fresh retry budget: at most `limit`, oldest first, in this one
    transaction with the record of who replayed what. Once it commits the rows are pending in
    Postgres, so a worker that restarts midway finds them there; nothing of the replay lives
    in Redis. A dry run counts the same rows and changes nothing."""
    matching = _matching(env_id, f)
    # Counted oldest first through (environment_id, status, id) and only so far as one call
    # goes (and one past it, to tell whether more match): bounded however many rows match.
    first = matching.with_only_columns(OutboxMessage.id).order_by(*IN_INDEX_ORDER)
    counted = first.limit(limit + 1).subquery()
    matched = int(await session.scalar(select(func.count()).select_from(counted)) or 0)
    sample = list(await session.scalars(matching.order_by(*IN_INDEX_ORDER).limit(REPLAY_SAMPLE)))
    if dry_run:
        return Replayed(matched, min(matched, limit), True, sample, limit)
    # The rows chosen first, then updated by key: Citus cannot plan an UPDATE whose subquery
    # holds the status sub-select above ("unrecognized node type"). The update checks the
    # status again, so a row another transaction changed meanwhile (delivered, replayed) is
    # left as it is, as the single statement did.
    chosen = list(await session.scalars(first.limit(limit)))
    stmt = (
        update(OutboxMessage)
        .where(
            OutboxMessage.environment_id == env_id,
            OutboxMessage.id == any_(cast(chosen, ARRAY(BigInteger))),
            OutboxMessage.status == f.status,
        )
        .values(
            status="pending",
            next_attempt_at=func.now(),
            replayed_at=func.now(),
            attempts=0,
            updated_at=func.now(),
        )
        .returning(OutboxMessage.id)
    )
    ids = list((await session.execute(stmt)).scalars())
    if ids:
        await session.execute(
            REPLAYED_ATTEMPTS, {"env": str(env_id), "ids": ids, "by": f"replayed by {actor}"}
        )
        wake_delivery(session, env_id)
    session.add(
        Replay(
            environment_id=env_id,
            actor=actor,
            filter=f.as_dict(),
            queued=len(ids),
            matched=matched,
        )
    )
    await session.flush()
    return Replayed(matched, len(ids), False, sample, limit)


async def list_replays(
    session: AsyncSession, env_id: uuid.UUID, *, before_id: int | None, limit: int
) -> list[Replay]:
    """The record of replays (who, which filter, how many queued), newest first; `before_id`
    is the last id of the previous page. Dry runs change nothing and are not recorded."""
    stmt = select(Replay).where(Replay.environment_id == env_id)
    if before_id:
        stmt = stmt.where(Replay.id < before_id)
    return list(await session.scalars(stmt.order_by(Replay.id.desc()).limit(limit)))
