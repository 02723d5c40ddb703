"""Each environment's delivery breaker: when its Segment keeps failing, stop hammering it.

Rows that fail already wait for their retry (Retry-After, clamped, else exponential backoff;
delivery.retry_delay). The breaker adds what no single row knows: how long every round to this
environment's Segment has failed. After OUTBOX_BREAKER_PAUSE_AFTER_SECONDS of that, delivery
pauses itself: no more rounds, one held row sent alone every OUTBOX_BREAKER_PROBE_SECONDS as a
probe. A probe Segment accepts resumes delivery, and so does the operator (admin API, console,
CLI). Paused, rows stay pending: held, never dead for their age, never lost.

State lives in Postgres (`outbox_breakers`), written in the round's own transaction under the
round lock, so any number of workers agree on it. Pausing and resuming each emit a platform
event into the environment's own stream (sent once it flows again), count a metric and log a
line; the console shows a banner while paused.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from integration.config import Settings
from integration.metrics import BREAKER_TRANSITIONS
from integration.outbound.events import emit
from integration.outbound.jobs import wake_delivery
from integration.store.models import Environment

log = logging.getLogger(__name__)

PAUSED = "Segment Delivery Paused"
RESUMED = "Segment Delivery Resumed"


@dataclass(frozen=True, slots=True)
class State:
    failing_since: datetime | None
    paused_at: datetime | None
    probe_due: bool
    last_error: str | None

    @property
    def paused(self) -> bool:
        return self.paused_at is not None


STATE = text("""
SELECT failing_since, paused_at, coalesce(probe_at <= now(), false) AS probe_due, last_error
FROM outbox_breakers WHERE environment_id = CAST(:env AS uuid)
""")

# The times are the transaction's, read once (`_now`) and bound: Citus refuses now() in a
# RETURNING clause and in an upsert's CASE on a distributed table.
NOW = text("SELECT now()")

# A round that Segment failed entirely. The clock starts at the first failure after a success;
# it pauses once it has run OUTBOX_BREAKER_PAUSE_AFTER_SECONDS (0: never). Paused, a failed
# probe only sets the next one.
FAILED = text("""
INSERT INTO outbox_breakers AS b (environment_id, failing_since, last_error)
VALUES (CAST(:env AS uuid), CAST(:now AS timestamptz), :error)
ON CONFLICT (environment_id) DO UPDATE SET
    failing_since = coalesce(b.failing_since, excluded.failing_since),
    last_error = excluded.last_error,
    paused_at = CASE
        WHEN b.paused_at IS NOT NULL THEN b.paused_at
        WHEN CAST(:pausing AS boolean)
             AND coalesce(b.failing_since, excluded.failing_since)
                 <= CAST(:pause_before AS timestamptz) THEN excluded.failing_since
        END,
    probe_at = CAST(:probe_at AS timestamptz)
RETURNING paused_at = CAST(:now AS timestamptz) AS paused_now, failing_since
""")

# Segment answered (accepted, or refused as invalid: either way it is up). Returns whether
# delivery had been paused (RETURNING sees the new row, so the old one is read first).
SUCCEEDED = text("""
WITH old AS (
    SELECT environment_id, paused_at FROM outbox_breakers
    WHERE environment_id = CAST(:env AS uuid) FOR UPDATE)
UPDATE outbox_breakers b SET failing_since = NULL, last_error = NULL, paused_at = NULL,
    probe_at = NULL,
    resumed_at = CASE WHEN old.paused_at IS NOT NULL THEN CAST(:now AS timestamptz)
                      ELSE b.resumed_at END,
    resumed_by = CASE WHEN old.paused_at IS NOT NULL THEN :by ELSE b.resumed_by END
FROM old
WHERE b.environment_id = old.environment_id
  AND (b.failing_since IS NOT NULL OR b.paused_at IS NOT NULL)
RETURNING old.paused_at IS NOT NULL AS was_paused
""")

# The held rows go at once, not when their own backoff (up to OUTBOX_BACKOFF_CAP_SECONDS)
# would have sent them: through ix_outbox_due.
# Rows locked by a round in flight (a probe) are its own to record, and are not waited for.
RELEASE = text("""
UPDATE outbox SET next_attempt_at = now()
WHERE environment_id = CAST(:env AS uuid) AND id IN (
    SELECT id FROM outbox
    WHERE environment_id = CAST(:env AS uuid) AND status = 'pending' AND next_attempt_at > now()
    FOR UPDATE SKIP LOCKED)
""")

# The probe: the oldest held row, due now (the claim then takes it first, alone).
PROBE = text("""
UPDATE outbox SET next_attempt_at = now()
WHERE environment_id = CAST(:env AS uuid) AND id = (
    SELECT min(id) FROM outbox WHERE environment_id = CAST(:env AS uuid) AND status = 'pending')
""")


async def _now(session: AsyncSession) -> datetime:
    return (await session.execute(NOW)).scalar_one()  # type: ignore[no-any-return]


async def state(session: AsyncSession, env_id: uuid.UUID) -> State | None:
    row = (await session.execute(STATE, {"env": str(env_id)})).first()
    return State(row.failing_since, row.paused_at, row.probe_due, row.last_error) if row else None


async def arm_probe(session: AsyncSession, env_id: uuid.UUID) -> None:
    await session.execute(PROBE, {"env": str(env_id)})


async def failed(
    session: AsyncSession, settings: Settings, env_id: uuid.UUID, error: str | None
) -> None:
    """Count a round Segment failed; pause the environment's delivery once it is time."""
    now = await _now(session)
    pause_after = settings.outbox_breaker_pause_after_seconds
    params = {
        "env": str(env_id),
        "error": error,
        "now": now,
        "pausing": pause_after > 0,
        "pause_before": now - timedelta(seconds=pause_after),
        "probe_at": now + timedelta(seconds=settings.outbox_breaker_probe_seconds),
    }
    row = (await session.execute(FAILED, params)).one()
    if row.paused_now:
        failing = settings.outbox_breaker_pause_after_seconds
        log.warning(
            "environment %s: delivery paused after %.0f s of failures; last error: %s",
            env_id,
            failing,
            error,
        )
        BREAKER_TRANSITIONS.labels("paused").inc()
        await _announce(session, env_id, PAUSED, failing_since=row.failing_since, error=error)


async def succeeded(session: AsyncSession, env_id: uuid.UUID, *, by: str = "probe") -> bool:
    """Segment answered: the breaker closes. True if delivery had been paused (and is now
    resumed, the held rows due at once)."""
    params = {"env": str(env_id), "by": by, "now": await _now(session)}
    was = (await session.execute(SUCCEEDED, params)).scalar()
    if not was:
        return False
    await session.execute(RELEASE, {"env": str(env_id)})
    log.warning("environment %s: delivery resumed (%s)", env_id, by)
    BREAKER_TRANSITIONS.labels("resumed").inc()
    await _announce(session, env_id, RESUMED, by=by)
    return True


async def resume(session: AsyncSession, env_id: uuid.UUID, *, by: str) -> bool:
    """The operator's word (`by`: api, console or cli): resume a paused environment's delivery
    now, the worker woken once this commits. False if it was not paused."""
    resumed = await succeeded(session, env_id, by=by)
    if resumed:
        wake_delivery(session, env_id)
    return resumed


@dataclass(frozen=True, slots=True)
class Status:
    """The breaker as the operator sees it (admin API, console, CLI)."""

    paused: bool
    paused_at: datetime | None = None
    failing_since: datetime | None = None
    next_probe_at: datetime | None = None
    last_error: str | None = None
    resumed_at: datetime | None = None
    resumed_by: str | None = None


STATUS = text("""
SELECT paused_at, failing_since, probe_at, last_error, resumed_at, resumed_by
FROM outbox_breakers WHERE environment_id = CAST(:env AS uuid)
""")


async def status(session: AsyncSession, env_id: uuid.UUID) -> Status:
    row = (await session.execute(STATUS, {"env": str(env_id)})).first()
    if row is None:
        return Status(paused=False)
    probe = row.probe_at if row.paused_at is not None else None
    return Status(
        row.paused_at is not None,
        row.paused_at,
        row.failing_since,
        probe,
        row.last_error,
        row.resumed_at,
        row.resumed_by,
    )


async def _announce(
    session: AsyncSession,
    env_id: uuid.UUID,
    event: str,
    *,
    failing_since: datetime | None = None,
    error: str | None = None,
    by: str | None = None,
) -> None:
    env = await session.get(Environment, env_id)
    if env is None:
        return
    props: dict[str, str] = {}
    if failing_since is not None:
        props["failing_since"] = failing_since.isoformat()
    if error:
        props["last_error"] = error
    if by:
        props["resumed_by"] = by
    await emit(session, env, event, **props)
