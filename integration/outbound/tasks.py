"""The outbound side's worker jobs: a periodic sweep finds environments with due outbox rows
and queues one `outbox.deliver` job per environment; publishing also queues that job right
after commit, so delivery starts at once when Redis is up and within a sweep when it was not.
The worker itself (integration/worker.py) runs these with the other housekeeping jobs.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from integration.metrics import OUTBOX_SWEEPS
from integration.outbound import delivery, outbox
from integration.outbound.jobs import deliver_job_id
from integration.queue import JobName

log = logging.getLogger(__name__)

SWEEP_ID_WINDOW = 3  # sweeps


async def deliver_job(ctx: dict[str, Any], env_id: str) -> dict[str, int]:
    started = time.monotonic()
    r = await delivery.deliver(
        ctx["sessions"], ctx["http"], ctx["settings"], ctx["box"], uuid.UUID(env_id)
    )
    if r.delivered or r.retried or r.dead:
        # The one INFO line a delivery is worth; a job that found nothing to send says nothing.
        log.info(
            "environment %s: %d delivered, %d to retry, %d dead (%.2f s)%s",
            env_id,
            r.delivered,
            r.retried,
            r.dead,
            time.monotonic() - started,
            f"; last error: {r.error}" if r.error else "",
        )
    return {"delivered": r.delivered, "retried": r.retried, "dead": r.dead}


def sweep_job_id(env_id: uuid.UUID | str, sweep_seconds: int) -> str:
    """The sweep's own id changes every few sweeps. A job id stays taken in Redis while arq
    thinks its job runs (up to its timeout after a worker was killed), and a stranded job must
    not hold up delivery for that long; the round lock makes a surplus job a no-op."""
    window = int(time.time()) // (SWEEP_ID_WINDOW * sweep_seconds)
    return f"{deliver_job_id(env_id)}:sweep:{window}"


async def sweep_job(ctx: dict[str, Any]) -> int:
    """Postgres is the truth: whatever is due gets a delivery job, lost Redis jobs included."""
    envs = await outbox.due_environments(ctx["sessions"])
    every = ctx["settings"].outbox_sweep_seconds
    for env_id in envs:
        await ctx["redis"].enqueue_job(
            JobName.DELIVER, str(env_id), _job_id=sweep_job_id(env_id, every)
        )
    OUTBOX_SWEEPS.inc()
    return len(envs)


async def purge_job(ctx: dict[str, Any]) -> int:
    """Delivered rows past their retention go, a bounded batch at a time."""
    days = ctx["settings"].outbox_delivered_retention_days
    purged = await outbox.purge_delivered(ctx["sessions"], days=days)
    if purged:
        log.info("purged %d delivered outbox rows older than %d days", purged, days)
    return purged
