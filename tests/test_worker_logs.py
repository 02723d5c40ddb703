"""What a real worker prints at LOG_LEVEL=INFO: nothing while idle, one line per delivery.

The worker runs against a database of its own, so that no other test's environment gives it
something to deliver (and to log) while this one listens for silence.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from integration.config import Settings
from integration.crypto import SecretBox
from integration.environments import service as environments
from integration.outbound import events as platform
from integration.outbound.publish import publish
from integration.store.db import SessionMaker, make_engine, make_sessionmaker, transaction
from tests.conftest import wait_for
from tests.harness import fresh_database
from tests.outbound_support import new_write_key, statuses, tracks
from tests.processes import Process
from tests.sink import SegmentSink

pytestmark = pytest.mark.slow

IDLE_SECONDS = 4  # four sweeps at OUTBOX_SWEEP_SECONDS=1


@pytest.fixture
def own_database(postgres_server: str) -> Iterator[str]:
    with fresh_database(postgres_server, "itest_logs") as url:
        yield url


@pytest.fixture
async def own_sessions(own_database: str) -> AsyncIterator[SessionMaker]:
    engine = make_engine(Settings(database_url=own_database), pool_size=2)
    yield make_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
async def worker(
    own_database: str, env_vars: dict[str, str], tmp_path: Path
) -> AsyncIterator[Process]:
    env = {
        **env_vars,
        "DATABASE_URL": own_database,
        "ARQ_QUEUE_NAME": f"test-logs:{uuid.uuid4().hex}",
        "LOG_LEVEL": "INFO",
    }
    proc = await asyncio.to_thread(Process("worker", env, log_dir=tmp_path).start)
    try:
        yield proc
    finally:
        await asyncio.to_thread(proc.stop)


def _lines(proc: Process) -> list[dict[str, Any]]:
    text = proc.log_path.read_text(errors="replace")
    return [orjson.loads(line) for line in text.splitlines() if line.startswith("{")]


async def test_an_idle_worker_is_silent_and_each_delivery_round_is_one_line(
    worker: Process, own_sessions: SessionMaker, sink: SegmentSink, settings: Settings
) -> None:
    # Arq's start-up lines come first; the sweep also runs once at start.
    await wait_for(lambda: any("Starting worker" in e["message"] for e in _lines(worker)))
    await asyncio.sleep(1.5)
    before = len(_lines(worker))
    await asyncio.sleep(IDLE_SECONDS)
    idle = _lines(worker)[before:]
    assert idle == [], f"an idle worker logged {len(idle)} lines: {idle[:4]}"

    sink.fail(500)  # the first attempt fails: one round to retry, then one that delivers
    env_id = await _stream_and_publish(own_sessions, settings, sink, events=3)
    rows = sum((await statuses(own_sessions, env_id)).values())
    assert rows >= 3  # with the platform's own "Segment Stream Enabled" event
    await wait_for(lambda: _all_delivered(own_sessions, env_id, rows), timeout=30)
    await asyncio.sleep(2)  # whatever else the worker would say about it, it has said by now

    said = _lines(worker)[before:]
    assert [e["level"] for e in said] == ["info", "info"], said
    retry, done = (e["message"] for e in said)
    assert f"environment {env_id}: 0 delivered, {rows} to retry, 0 dead" in retry
    assert "last error: HTTP 500" in retry
    assert f"environment {env_id}: {rows} delivered, 0 to retry, 0 dead" in done


async def _all_delivered(sessions: SessionMaker, env_id: uuid.UUID, rows: int) -> bool:
    return (await statuses(sessions, env_id)).get("delivered", 0) == rows


async def _stream_and_publish(
    sessions: SessionMaker, settings: Settings, sink: SegmentSink, *, events: int
) -> uuid.UUID:
    """An environment streaming to the sink, and product events, in one transaction: the
    worker finds every row due at once (turning the stream on adds a platform event)."""
    key = new_write_key()
    sink.write_keys.add(key)
    changes = {"segment_write_key": key, "segment_api_url": sink.url, "stream_enabled": True}
    async with transaction(sessions) as session:
        env = (await environments.create(session, f"logs-{uuid.uuid4().hex[:8]}")).environment
        await platform.change_settings(
            session, env, SecretBox.of(settings), changes, allowlist=settings.segment_api_hosts
        )
        await publish(session, env, tracks(events))
    return env.id
