"""The worker: an arq worker running the outbound delivery jobs and the housekeeping of both
directions (expiring events past an environment's retention, purging delivered outbox rows,
folding old activity counts). Assembly only, like app.py: each job lives with what it does.

Postgres is the truth; Redis only schedules. Losing Redis delays delivery and never loses it:
the worker reconnects, and its sweep finds whatever came due meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any

import httpx
from arq import cron, func
from arq.worker import Worker
from prometheus_client import start_http_server

from integration.config import Settings
from integration.crypto import SecretBox
from integration.inbound import retention
from integration.outbound.tasks import deliver_job, purge_job, sweep_job
from integration.queue import JobName, job_deserializer, job_serializer, redis_settings
from integration.store import activity
from integration.store.db import make_engine, make_sessionmaker

log = logging.getLogger(__name__)


async def fold_job(ctx: dict[str, Any]) -> None:
    await activity.fold(ctx["sessions"])


def _housekeeping(job: Any, name: str, *, second: int, minute: set[int] | None = None) -> Any:
    """A job that runs once a minute (or at `minute`s), at startup too, never two at once."""
    return cron(
        job,
        name=name,
        minute=minute,
        second=second,
        run_at_startup=True,
        unique=True,
        keep_result=0,
        timeout=300,
        max_tries=1,
    )


def build_worker(settings: Settings, ctx: dict[str, Any], *, handle_signals: bool = True) -> Worker:
    """The arq worker. `handle_signals=False` for one that runs inside another program's event
    loop (the tests run it so), which stops it by closing it."""
    assert settings.redis_url is not None
    every = settings.outbox_sweep_seconds
    options: dict[str, Any] = {
        "functions": [
            func(deliver_job, name=JobName.DELIVER, keep_result=0, timeout=300, max_tries=1)
        ],
        "cron_jobs": [
            cron(
                sweep_job,
                name=JobName.SWEEP,
                second=set(range(0, 60, every)),
                run_at_startup=True,
                keep_result=0,
                timeout=60,
                max_tries=1,
            ),
            _housekeeping(purge_job, JobName.PURGE, second=30),
            _housekeeping(retention.expire_job, JobName.EXPIRE, second=40),
            _housekeeping(fold_job, JobName.FOLD, second=50, minute=set(range(0, 60, 10))),
        ],
        "queue_name": settings.arq_queue_name,
        "redis_settings": redis_settings(settings.redis_url),
        # JSON, never pickle: a job planted in Redis must not run code here.
        "job_serializer": job_serializer,
        "job_deserializer": job_deserializer,
        "ctx": ctx,
        "keep_result": 0,
        "max_jobs": MAX_JOBS,
        "poll_delay": 0.05,
        "handle_signals": handle_signals,
        # Each worker records that it lives under a key of its own (compose's healthcheck,
        # `worker --check`, reads it): a shared key would vouch for a dead worker while
        # another one runs.
        "health_check_key": health_key(settings),
        "health_check_interval": HEALTH_SECONDS,
    }
    return Worker(**options)


# Jobs one worker runs at once: delivery rounds of as many environments, and housekeeping.
MAX_JOBS = 20
HEALTH_SECONDS = 10  # the key lives one second longer: missing, the worker's loop is stuck


def health_key(settings: Settings) -> str:
    """This machine's (this container's) worker's health key in Redis."""
    return f"{settings.arq_queue_name}:health-check:{socket.gethostname()}"


def check_health(settings: Settings) -> bool:
    """Whether this machine's worker recorded its health within HEALTH_SECONDS (+1)."""
    from arq.worker import async_check_health

    assert settings.redis_url is not None
    checked = async_check_health(redis_settings(settings.redis_url), health_key(settings))
    return asyncio.run(checked) == 0


async def resources(settings: Settings) -> dict[str, Any]:
    """What every job reads from its context: settings, database, secrets, the HTTP client."""
    # A delivery round holds its connection while its request is in flight (its rows stay
    # locked), up to SEGMENT_TIMEOUT_SECONDS when Segment hangs: one for every job the worker
    # may run, so that environments whose Segment hangs never keep another's round waiting.
    engine = make_engine(settings, pool_size=MAX_JOBS + 2)
    return {
        "settings": settings,
        "engine": engine,
        "sessions": make_sessionmaker(engine),
        "box": SecretBox.of(settings),
        "http": httpx.AsyncClient(
            timeout=settings.segment_timeout_seconds,
            # Each environment's round has at most OUTBOX_ENV_CONCURRENCY requests in flight,
            # so environments whose Segment hangs leave connections for the others.
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
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
    elapsed time, "%6.2fs ") and its health line (every 10 s) become DEBUG. Failures stay at ERROR,
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
