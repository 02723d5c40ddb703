"""The arq queue as the API sees it: optional, after-commit, never the only copy of anything.

Postgres holds every outbox row; a job here only says "look now" to a worker. When Redis is
down, enqueueing fails quietly and the worker's periodic sweep finds the rows anyway.

Jobs are JSON, never pickle (arq's default): whoever can write to Redis must not be able to
run code in the worker, which holds SECRET_KEY and DATABASE_URL. The enqueuer here and the
worker both use `job_serializer` / `job_deserializer`.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any

import orjson
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings

from integration.config import Settings
from integration.store.jobs import Job

log = logging.getLogger(__name__)


class JobName(StrEnum):
    """Every arq job's name, `domain.verb`, in this one place: the API and a host product queue
    them (after a commit), the worker (integration/worker.py) runs them under these names."""

    DELIVER = "outbox.deliver"  # one environment's delivery round
    SWEEP = "outbox.sweep"  # queues DELIVER for every environment with due rows
    PURGE = "outbox.purge"  # deletes delivered rows past their keeping time
    EXPIRE = "events.expire"  # deletes events past their environment's retention
    FOLD = "activity.fold"  # folds old activity counts into coarser ones


# arq's job envelope: function, args, kwargs, try, enqueue time (ms). Results add more keys.
JOB_FIELDS = {"f": str, "a": list, "k": dict}


def job_serializer(data: dict[str, Any]) -> bytes:
    return orjson.dumps(data)


def job_deserializer(raw: bytes) -> dict[str, Any]:
    """JSON only, and the shape arq expects; anything else (a pickle planted in Redis) raises,
    which arq logs and counts as a failed job without running it."""
    data = orjson.loads(raw)
    if not isinstance(data, dict) or not all(
        isinstance(data.get(key), kind) for key, kind in JOB_FIELDS.items()
    ):
        raise ValueError("not an arq job envelope")
    return data


def redis_settings(url: str) -> RedisSettings:
    settings = RedisSettings.from_dsn(url)
    settings.conn_retries = 0
    settings.conn_timeout = 2
    return settings


class Queue:
    def __init__(self, settings: Settings) -> None:
        self._url = settings.redis_url
        self._queue_name = settings.arq_queue_name
        self._pool: ArqRedis | None = None

    async def _get(self) -> ArqRedis | None:
        if self._url is None:
            return None
        if self._pool is None:
            self._pool = await create_pool(
                redis_settings(self._url),
                default_queue_name=self._queue_name,
                job_serializer=job_serializer,
                job_deserializer=job_deserializer,
            )
        return self._pool

    async def enqueue(self, function: str, *args: Any, job_id: str | None = None) -> bool:
        try:
            pool = await self._get()
            if pool is None:
                return False
            await pool.enqueue_job(function, *args, _job_id=job_id)
            return True
        except Exception as exc:  # Redis down or refusing: Postgres keeps the rows
            log.warning(
                "could not enqueue %s (%s); the sweep will pick it up", function, type(exc).__name__
            )
            return False

    async def send(self, job: Job) -> bool:
        """An after-commit job (store.jobs) onto the queue; False if Redis would not take it."""
        return await self.enqueue(job.function, *job.args, job_id=job.job_id)

    async def ping(self) -> bool:
        try:
            pool = await self._get()
            return bool(pool is not None and await pool.ping())
        except Exception:
            return False

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None
