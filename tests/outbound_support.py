"""Helpers shared by the outbound end-to-end tests (not a test module itself).

A `TimedSink` is the harness's Segment sink that also notes when each message arrived, what
each request was answered, how many requests were in flight at once, and can be told to be
slow before answering (so a 429 can come after a long request, or batches overlap).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import httpx
from arq.worker import Worker
from prometheus_client import REGISTRY
from sqlalchemy import select, update
from starlette.requests import Request
from starlette.responses import JSONResponse

from integration import worker as arq_worker
from integration.config import Settings
from integration.store.db import SessionMaker, transaction
from integration.store.models import Environment, OutboxMessage
from tests import processes
from tests.harness import TestEnvironment, wait_for
from tests.processes import ROOT
from tests.sink import SegmentSink

PLATFORM_PREFIX = "environment-"  # anonymousId of the platform's own events (outbound/events.py)


@dataclass
class TimedSink(SegmentSink):
    arrivals: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)
    answers: list[tuple[float, int]] = field(default_factory=list)
    slow: deque[float] = field(default_factory=deque)
    delay: float = 0.0
    active: int = 0
    peak: int = 0

    def start(self) -> TimedSink:
        super().start()
        return self

    def slow_down(self, seconds: float, times: int = 1) -> None:
        """The next `times` requests wait `seconds` before being answered (faults still apply)."""
        self.slow.extend([seconds] * times)

    async def batch(self, request: Request) -> JSONResponse:
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            pause = self.slow.popleft() if self.slow else self.delay
            if pause:
                await asyncio.sleep(pause)
            seen = len(self.received)
            response = await super().batch(request)
            # No await between the sink's `received.extend` and its return: these are ours.
            now = time.time()
            self.answers.append((now, response.status_code))
            self.arrivals.extend((now, r.write_key, r.message) for r in self.received[seen:])
            return response
        finally:
            self.active -= 1

    def messages(self, write_key: str) -> list[dict[str, Any]]:
        return [r.message for r in self.received if r.write_key == write_key]

    def product_ids(self, write_key: str) -> list[str]:
        """messageIds received under `write_key`, without the platform's own events."""
        return [m["messageId"] for m in self.messages(write_key) if not _platform(m)]


def _platform(message: dict[str, Any]) -> bool:
    return str(message.get("anonymousId", "")).startswith(PLATFORM_PREFIX)


class Streams:
    """Environments streaming to the test's sink, each with its own write key."""

    def __init__(self, make: Callable[..., Awaitable[TestEnvironment]], sink: TimedSink) -> None:
        self._make = make
        self._sink = sink
        self.made: list[uuid.UUID] = []
        self.keys: dict[uuid.UUID, str] = {}

    async def __call__(
        self,
        *,
        stream: bool = True,
        api_url: str | None = None,
        known_key: bool = True,
        **changes: Any,
    ) -> TestEnvironment:
        """`changes`: more of the environment's settings (`make_environment`'s)."""
        key = new_write_key()
        if known_key:
            self._sink.write_keys.add(key)
        env = await self._make(
            "out",
            segment_write_key=key,
            segment_api_url=api_url or self._sink.url,
            stream_enabled=stream,
            **changes,
        )
        self.made.append(env.id)
        self.keys[env.id] = key
        return env


class Delivery:
    """The outbound tests' preamble as one fixture: an environment streaming to the test's sink
    (`stream()`, with its write key there), product events published through the admin API
    (`publish`), and the delivery worker in the test's own loop (`worker`, or `deliver`: until
    every row of an environment is delivered)."""

    def __init__(
        self, admin: httpx.AsyncClient, settings: Settings, sessions: SessionMaker, streams: Streams
    ) -> None:
        self.admin = admin
        self.settings = settings
        self.sessions = sessions
        self.streams = streams

    async def stream(self, **options: Any) -> tuple[TestEnvironment, str]:
        """A new streaming environment (`Streams` options) and its write key at the sink."""
        env = await self.streams(**options)
        return env, self.streams.keys[env.id]

    async def publish(self, env: TestEnvironment, body: Any, *, chunk: int = 250) -> list[str]:
        return await publish_http(self.admin, env.id, body, chunk=chunk)

    def worker(self, **changes: Any) -> AbstractAsyncContextManager[Worker]:
        return in_process_worker(self.settings, **changes)

    async def deliver(
        self,
        env: TestEnvironment,
        *,
        timeout: float = 20,  # noqa: ASYNC109 - a polling deadline, not a cancellation scope
        **changes: Any,
    ) -> None:
        """Run the worker (`changes` to its settings) until every row of `env` is delivered."""
        async with self.worker(**changes):
            await wait_for(partial(all_delivered, self.sessions, env.id), timeout=timeout)


def new_write_key() -> str:
    return f"wk_{uuid.uuid4().hex}"


def track(seq: int, *, run: str, message_id: str | None = None, **extra: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": "track",
        "userId": f"user-{seq % 7}",
        "event": "Flow Started",
        "properties": {"seq": seq, "run": run},
        **extra,
    }
    if message_id is not None:
        message["messageId"] = message_id
    return message


def tracks(count: int, *, run: str | None = None) -> list[dict[str, Any]]:
    """`count` track events with their own messageIds, `{run}-{seq}`."""
    run = run or uuid.uuid4().hex[:8]
    return [track(i, run=run, message_id=f"{run}-{i}") for i in range(count)]


async def publish_http(
    admin: httpx.AsyncClient, env_id: uuid.UUID, body: Any, *, chunk: int = 250
) -> list[str]:
    """POST product events (in chunks when a list); every request must answer 202."""
    items = body if isinstance(body, list) else [body]
    queued: list[str] = []
    for start in range(0, len(items), chunk):
        response = await admin.post(
            f"/api/environments/{env_id}/product-events", json=items[start : start + chunk]
        )
        assert response.status_code == 202, response.text
        queued.extend(response.json()["message_ids"])
    return queued


async def statuses(sessions: SessionMaker, env_id: uuid.UUID) -> Counter[str]:
    async with sessions() as session:
        rows = await session.scalars(
            select(OutboxMessage.status).where(OutboxMessage.environment_id == env_id)
        )
        return Counter(rows)


async def outbox(sessions: SessionMaker, env_id: uuid.UUID) -> list[OutboxMessage]:
    async with sessions() as session:
        stmt = (
            select(OutboxMessage)
            .where(OutboxMessage.environment_id == env_id)
            .order_by(OutboxMessage.id)
        )
        return list(await session.scalars(stmt))


async def all_delivered(sessions: SessionMaker, env_id: uuid.UUID) -> bool:
    counts = await statuses(sessions, env_id)
    return bool(counts) and set(counts) == {"delivered"}


async def stop_streams(sessions: SessionMaker, env_ids: list[uuid.UUID]) -> None:
    """Test cleanup: later tests' workers should not keep retrying this test's dead sink."""
    if not env_ids:
        return
    async with transaction(sessions) as session:
        await session.execute(
            update(Environment).where(Environment.id.in_(env_ids)).values(stream_enabled=False)
        )


@asynccontextmanager
async def in_process_worker(settings: Settings, **changes: Any) -> AsyncIterator[Worker]:
    """The delivery worker in the test's own event loop, as arq's own tests run theirs: the
    same tasks and arq settings as `python -m integration worker` (with `changes` to its
    settings), without a process to start. Closed, and its clients with it, afterwards."""
    config = settings.model_copy(update=changes)
    ctx = await arq_worker.resources(config)
    worker = arq_worker.build_worker(config, dict(ctx), handle_signals=False)
    running = asyncio.create_task(worker.async_run())
    try:
        yield worker
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        # close() cancels jobs still running and then gathers them, which raises the
        # CancelledError into the test; let them finish (each is bounded by its timeouts).
        await asyncio.gather(*worker.tasks.values(), return_exceptions=True)
        await worker.close()
        await arq_worker.release(ctx)


def sweeps() -> float:
    """How many sweeps this process's workers have made (the metric the worker serves)."""
    return REGISTRY.get_sample_value("integration_outbox_sweeps_total") or 0.0


async def after_sweeps(count: int) -> None:
    """Wait until `count` more sweeps have run: what "nothing happens meanwhile" waits on."""
    target = sweeps() + count
    await wait_for(lambda: sweeps() >= target, timeout=10 + 2 * count)


@asynccontextmanager
async def running_worker(
    env_vars: dict[str, str], **extra: str
) -> AsyncIterator[processes.Process]:
    """A real `python -m integration worker`, always stopped afterwards."""
    worker = await asyncio.to_thread(processes.worker, env_vars, **extra)
    try:
        yield worker
    finally:
        await asyncio.to_thread(worker.stop)


@dataclass(frozen=True)
class CliResult:
    """A command's exit code and output. `out` is stdout and stderr merged, without the
    "instance: ..." line every command prints on stderr, which is kept in `instance`."""

    code: int
    out: str
    instance: str = ""

    def __str__(self) -> str:
        return f"exit {self.code}: {self.instance}\n{self.out}"

    @classmethod
    def of(cls, code: int, output: bytes) -> CliResult:
        lines = output.decode(errors="replace").splitlines(keepends=True)
        said = [line for line in lines if line.startswith("instance: ")]
        rest = "".join(line for line in lines if not line.startswith("instance: "))
        return cls(code, rest, "".join(said).strip())


async def run_cli(
    env_vars: dict[str, str], *args: str, stderr: int, seconds: float = 60
) -> tuple[int, bytes, bytes]:
    """Run `python -m integration ARGS` with the test environment: its exit code, stdout and
    stderr (`stderr=asyncio.subprocess.STDOUT` merges it into stdout, and leaves it empty)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "integration",
        *args,
        cwd=ROOT,
        env={**os.environ, **env_vars},
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
    )
    out, err = await asyncio.wait_for(proc.communicate(), seconds)
    assert proc.returncode is not None
    return proc.returncode, out, err or b""


async def cli(env_vars: dict[str, str], *args: str, seconds: float = 60) -> CliResult:
    """Run `python -m integration ARGS` with the test environment; stdout and stderr merged."""
    code, out, _ = await run_cli(env_vars, *args, stderr=asyncio.subprocess.STDOUT, seconds=seconds)
    return CliResult.of(code, out)
