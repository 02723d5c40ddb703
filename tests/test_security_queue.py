"""Jobs in Redis are JSON, never pickle (issue #15.2): whoever can write to Redis cannot run
code in the worker, and a planted job neither runs nor stops the worker."""

from __future__ import annotations

import asyncio
import pickle
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from integration.config import Settings
from integration.queue import JobName, Queue
from tests.admin_support import ok
from tests.conftest import wait_for
from tests.outbound_support import Streams, TimedSink, running_worker


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_a_queued_job_is_json(settings: Settings, redis: Redis) -> None:
    queue_name = f"test:json:{uuid.uuid4().hex}"
    queue = Queue(settings.model_copy(update={"arq_queue_name": queue_name}))
    job_id = f"{JobName.DELIVER}:{uuid.uuid4()}"
    try:
        assert await queue.enqueue(JobName.DELIVER, "an-environment-id", job_id=job_id)
        raw = await redis.get(f"arq:job:{job_id}")
    finally:
        await queue.close()
        await redis.delete(f"arq:job:{job_id}", queue_name)
    assert raw is not None and not raw.startswith(b"\x80")  # pickle's protocol marker
    job = orjson.loads(raw)
    assert (job["f"], job["a"], job["k"]) == (JobName.DELIVER, ["an-environment-id"], {})


class Planted:
    """Unpickling this creates a file: the proof that a pickled job would run code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


async def test_a_pickled_job_planted_in_redis_is_not_run_and_the_worker_carries_on(
    admin: httpx.AsyncClient,
    env_vars: dict[str, str],
    streams: Streams,
    sink: TimedSink,
    redis: Redis,
    tmp_path: Path,
) -> None:
    env = await streams()
    queue_name = f"test:planted:{uuid.uuid4().hex}"
    marker = tmp_path / "pwned"
    job_id = f"planted-{uuid.uuid4().hex}"
    job = {
        "t": 1,
        "f": JobName.DELIVER,
        "a": [Planted(marker)],
        "k": {},
        "et": int(time.time() * 1000),
    }
    try:
        async with running_worker(env_vars, ARQ_QUEUE_NAME=queue_name) as worker:
            await redis.set(f"arq:job:{job_id}", pickle.dumps(job))
            await redis.zadd(queue_name, {job_id: int(time.time() * 1000)})

            async def taken() -> bool:
                return await redis.zscore(queue_name, job_id) is None

            await wait_for(taken)
            await asyncio.sleep(0.5)
            assert not marker.exists(), "the pickled job ran code in the worker"
            assert worker.proc is not None and worker.proc.poll() is None, worker.log()

            # And the worker still delivers.
            body = {"type": "track", "userId": "u1", "event": "Flow Started"}
            published = ok(
                await admin.post(f"/api/environments/{env.id}/product-events", json=body), 202
            )
            await wait_for(lambda: set(published["message_ids"]) <= set(sink.message_ids()))
        assert "deserializing job" in worker.log()
    finally:
        await redis.delete(f"arq:job:{job_id}", queue_name)
