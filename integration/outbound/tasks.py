"""The arq worker, its tasks and its settings: a periodic sweep finds environments with due
outbox rows and queues one `outbox.deliver` job per environment; publishing also queues that
job right after commit, so delivery starts at once when Redis is up and within a sweep when it
was not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

import httpx
from arq import cron, func
from arq.worker import Worker
from prometheus_client import start_http_server

from integration.config import Settings
from integration.crypto import SecretBox
from integration.metrics import OUTBOX_SWEEPS
from integration.outbound import delivery, outbox
from integration.outbound.jobs import DELIVER, deliver_job_id
from integration.queue import job_deserializer, job_serializer, redis_settings
from integration.store.db import make_engine, make_sessionmaker

log = logging.getLogger(__name__)

SWEEP = "outbox.sweep"
PURGE = "outbox.purge"
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
        await ctx["redis"].enqueue_job(DELIVER, str(env_id), _job_id=sweep_job_id(env_id, every))
    OUTBOX_SWEEPS.inc()
    return len(envs)


async def purge_job(ctx: dict[str, Any]) -> int:
    """Delivered rows past their retention go, a bounded batch at a time."""
    days = ctx["settings"].outbox_delivered_retention_days
    purged = await outbox.purge_delivered(ctx["sessions"], days=days)
    if purged:
        log.info("purged %d delivered outbox rows older than %d days", purged, days)
    return purged


def build_worker(settings: Settings, ctx: dict[str, Any], *, handle_signals: bool = True) -> Worker:
    """The arq worker. `handle_signals=False` for one that runs inside another program's event
    loop (the tests run it so), which stops it by closing it."""
    assert settings.redis_url is not None
    every = settings.outbox_sweep_seconds
    options: dict[str, Any] = {
        "functions": [func(deliver_job, name=DELIVER, keep_result=0, timeout=300, max_tries=1)],
        "cron_jobs": [
            cron(
                sweep_job,
                name=SWEEP,
                second=set(range(0, 60, every)),
                run_at_startup=True,
                keep_result=0,
                timeout=60,
                max_tries=1,
            ),
            cron(
                purge_job,
                name=PURGE,
                minute=None,
                second=30,
                run_at_startup=True,
                keep_result=0,
                timeout=300,
                max_tries=1,
            ),
        ],
        "queue_name": settings.arq_queue_name,
        "redis_settings": redis_settings(settings.redis_url),
        # JSON, never pickle: a job planted in Redis must not run code here.
        "job_serializer": job_serializer,
        "job_deserializer": job_deserializer,
        "ctx": ctx,
        "keep_result": 0,
        "max_jobs": 20,
        "poll_delay": 0.05,
        "handle_signals": handle_signals,
    }
    return Worker(**options)


async def resources(settings: Settings) -> dict[str, Any]:
    """What every job reads from its context: settings, database, secrets, the HTTP client."""
    engine = make_engine(settings, pool_size=5)
    return {
        "settings": settings,
        "engine": engine,
        "sessions": make_sessionmaker(engine),
        "box": SecretBox.of(settings),
        "http": httpx.AsyncClient(
            timeout=settings.segment_timeout_seconds,
            limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
        ),
    }


async def release(ctx: dict[str, Any]) -> None:
    await ctx["http"].aclose()
    await ctx["engine"].dispose()


async def _close(worker: Worker) -> None:
    """Close a worker whose Redis may be gone, where arq's own close() fails half-way."""
    try:
        await worker.close()
    except Exception as exc:
        log.info("closed the worker without its queue (%s)", type(exc).__name__)
        with contextlib.suppress(Exception):
            await worker.pool.close(close_connection_pool=True)


async def _main(settings: Settings) -> None:
    ctx = await resources(settings)
    # arq's signal handlers belong to one Worker; between reconnects a SIGTERM reaches the
    # previous one, whose on_stop sets this, so the worker still stops while Redis is down.
    stopping = asyncio.Event()
    try:
        while not stopping.is_set():
            worker = build_worker(settings, dict(ctx))
            worker.on_stop = lambda _signal: stopping.set()
            try:
                await worker.async_run()
                return
            except asyncio.CancelledError:
                return
            except Exception as exc:
                # Losing Redis must not end delivery: wait and reconnect; Postgres kept the rows.
                log.warning("worker lost its queue (%s: %s); reconnecting", type(exc).__name__, exc)
            finally:
                await _close(worker)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), 1)
    finally:
        await release(ctx)


class QuietJobLines(logging.Filter):
    """arq logs the start and the end of every job at INFO, and the sweep is a job every
    second: idle, the worker printed two lines a second. Those lines (each starts with arq's
    elapsed time, "%6.2fs ") and its hourly health line become DEBUG. Failures stay at ERROR,
    and a delivery that did something has its own summary line (deliver_job)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not str(record.msg).startswith(
            ("%6.2fs ", "recording health")
        ):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def run_worker(settings: Settings) -> None:
    logging.getLogger("arq.worker").addFilter(QuietJobLines())
    if settings.worker_metrics_port:
        # Delivery counters live in this process: Prometheus scrapes them here.
        start_http_server(settings.worker_metrics_port, addr=settings.host)
    asyncio.run(_main(settings))
