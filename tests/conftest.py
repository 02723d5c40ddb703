"""Real Postgres and real Redis for every test.

TEST_DATABASE_URL / TEST_REDIS_URL when set (CI uses the machine's servers), else the embedded
ones under .data-test/. Each run gets a fresh database built by `python -m integration
migrate` (Alembic upgrade head) and dropped afterwards, and its own arq queue name. Under
pytest-xdist (`make test` runs `-n`) each worker is a run of its own: its own database, queue
name and server process, and, embedded, its own Postgres and Redis folders.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from integration.config import Settings
from integration.embedded import start_postgres, start_redis
from integration.environments import service as environments
from integration.outbound import events
from integration.store.db import SessionMaker, make_sessionmaker, transaction
from tests import processes
from tests.harness import TestEnvironment, fresh_database, wait_for
from tests.outbound_support import Delivery, Streams, TimedSink, stop_streams
from tests.processes import ROOT

__all__ = ["TestEnvironment", "wait_for"]  # tests import them from here

# The property tests' examples are what they check; how fast a busy machine (parallel workers,
# other jobs) draws them is not: no per-example deadline, no health check on generation speed.
hypothesis_settings.register_profile(
    "suite", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
hypothesis_settings.load_profile("suite")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests marked slow (those that start processes or wait on retries) first: workers
    take tests in this order, so the long ones start early instead of ending the run alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


# "gw0", "gw1"... under pytest-xdist; "" when pytest runs alone.
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
ADMIN_TOKEN = "test-admin-token-" + uuid.uuid4().hex
SECRET_KEY = "test-secret-key-" + uuid.uuid4().hex


def _per_worker(name: str) -> str:
    """An embedded server's folder name: one server per data folder, so one per xdist worker."""
    return f"{name}-{WORKER}" if WORKER else name


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    # A folder per xdist worker: pgserver's count of a folder's users is not safe against
    # workers starting and stopping it at the same moment.
    server = start_postgres(ROOT / ".data-test" / _per_worker("postgres"))
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def database_url(postgres_server: str) -> Iterator[str]:
    """A fresh database for this run, migrated by the product's own migrate command."""
    with fresh_database(postgres_server, "itest") as url:
        yield url


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("TEST_REDIS_URL")
    if url:
        yield url
        return
    server = start_redis(ROOT / ".data-test" / _per_worker("redis"), persist=False)
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def env_vars(database_url: str, redis_url: str) -> dict[str, str]:
    """The environment every child process (serve, worker, CLI) of this run gets."""
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "SECRET_KEY": SECRET_KEY,
        "ARQ_QUEUE_NAME": f"test:{uuid.uuid4().hex}",
        "PUBLIC_BASE_URL": "http://testserver.invalid",
        "OUTBOX_SWEEP_SECONDS": "1",
        "OUTBOX_BACKOFF_BASE_SECONDS": "0.2",
        "OUTBOX_BACKOFF_CAP_SECONDS": "2",
        "SEGMENT_TIMEOUT_SECONDS": "2",
        # The Segment-like sink and the closed ports that stand in for an unreachable Segment
        # are on this machine: the one host besides Segment's that the test processes allow.
        "SEGMENT_API_ALLOWLIST": "127.0.0.1",
        # Every test reaches the shared server from 127.0.0.1, and the fuzzing sends requests
        # without credentials: the failed-auth throttle is tested on a server of its own.
        "ADMIN_AUTH_BURST": "100000",
        "LOG_LEVEL": "INFO",
        # Many tests try unknown keys from 127.0.0.1; the throttle has tests of its own.
        "AUTH_FAILURES_PER_MINUTE": "100000",
    }


@pytest.fixture(scope="session")
def settings(env_vars: dict[str, str]) -> Settings:
    return Settings(**{k.lower(): v for k, v in env_vars.items()})


@pytest.fixture(scope="session")
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    assert settings.database_url
    engine = create_async_engine(settings.database_url, pool_size=5)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
def sessions(engine: AsyncEngine) -> SessionMaker:
    return make_sessionmaker(engine)


@pytest.fixture(scope="session")
def server(env_vars: dict[str, str]) -> Iterator[processes.Process]:
    """The real API server process, shared by the run (tests isolate by environment)."""
    proc = processes.serve(env_vars)
    yield proc
    proc.stop()


@pytest.fixture
async def admin(server: processes.Process) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ) as client:
        yield client


@pytest.fixture
async def http(server: processes.Process) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        yield client


@pytest.fixture
def strict(env_vars: dict[str, str]) -> Iterator[processes.Process]:
    """A server of its own, with a small failed-auth budget: 3 at once, one more a second."""
    server = processes.serve(env_vars, ADMIN_AUTH_BURST="3", ADMIN_AUTH_REFILL_SECONDS="1")
    yield server
    server.stop()


@pytest.fixture
def make_environment(
    sessions: SessionMaker, settings: Settings
) -> Callable[..., Awaitable[TestEnvironment]]:
    """Create an environment (unique name) straight through the service; settings optional."""
    from integration.crypto import SecretBox

    async def make(prefix: str = "env", **changes: Any) -> TestEnvironment:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        async with transaction(sessions) as session:
            created = await environments.create(session, name)
            if changes:
                box = SecretBox.of(settings)
                await events.change_settings(
                    session,
                    created.environment,
                    box,
                    changes,
                    allowlist=settings.segment_api_hosts,
                )
        return TestEnvironment(
            created.environment.id, name, created.webhook_key, created.source_write_key
        )

    return make


@pytest.fixture
def sink() -> Iterator[TimedSink]:
    """A Segment-like Tracking API for this test (tests/sink.py), with arrival times."""
    s = TimedSink().start()
    yield s
    s.stop()


@pytest.fixture
async def streams(
    make_environment: Callable[..., Awaitable[TestEnvironment]],
    sink: TimedSink,
    sessions: SessionMaker,
) -> AsyncIterator[Streams]:
    """`await streams()` makes an environment streaming to the test's sink with a write key of
    its own (`streams.keys[env.id]`); every stream it made is turned off afterwards, so no
    later worker keeps sending to a sink that is gone."""
    made = Streams(make_environment, sink)
    yield made
    await stop_streams(sessions, made.made)


@pytest.fixture
def delivery(
    admin: httpx.AsyncClient, settings: Settings, sessions: SessionMaker, streams: Streams
) -> Delivery:
    """The outbound tests' preamble (tests/outbound_support.py, `Delivery`), on `streams`."""
    return Delivery(admin, settings, sessions, streams)
