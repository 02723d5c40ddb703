"""Engine and sessions. One place commits: `transaction()`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import asyncpg
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from integration.config import Settings

SessionMaker = async_sessionmaker[AsyncSession]
T = TypeVar("T")


def make_engine(settings: Settings, *, pool_size: int | None = None) -> AsyncEngine:
    settings.require("database_url")
    assert settings.database_url is not None
    return create_async_engine(
        settings.database_url,
        pool_size=pool_size or settings.db_pool_size,
        max_overflow=0,  # overflow connections churn under load; requests queue for one instead
        pool_recycle=1800,
        pool_timeout=10,
        connect_args={"timeout": 5, "command_timeout": 30},
    )


def make_sessionmaker(engine: AsyncEngine) -> SessionMaker:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def transaction(sessions: SessionMaker) -> AsyncIterator[AsyncSession]:
    """A session whose work is committed on success and rolled back on any error."""
    async with sessions() as session, session.begin():
        yield session


@asynccontextmanager
async def driver_transaction(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """A transaction on asyncpg's own connection (yielded), taken from the engine's pool.

    For the webhook's writers, which run the same few statements thousands of times a second:
    there SQLAlchemy's work per statement (cache lookups, parameter and result wrapping, greenlet
    switches) cost about 1.6 ms of CPU per transaction, several times the driver's own."""
    async with engine.connect() as conn:
        pg = (await conn.get_raw_connection()).driver_connection
        assert pg is not None  # a checked-out connection always has one
        try:
            async with pg.transaction():
                yield pg
        except BaseException as exc:
            if is_unavailable(exc):
                # The pool learns of a dead connection only through SQLAlchemy's own calls.
                await conn.invalidate()
            raise


def is_unavailable(exc: BaseException) -> bool:
    """True for errors that mean the database could not be reached, not that a query was wrong."""
    if isinstance(exc, (OSError, TimeoutError, ConnectionError)):
        return True
    if isinstance(exc, (OperationalError, InterfaceError)):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    name = type(getattr(exc, "orig", None) or exc).__name__
    return name in {
        "ConnectionDoesNotExistError",
        "CannotConnectNowError",
        "TooManyConnectionsError",
        "ConnectionFailureError",
        "InterfaceError",
        "AdminShutdownError",
    }


RETRYABLE_SQLSTATES = {"40001", "40P01"}  # serialization failure, deadlock detected


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, asyncpg.PostgresError):  # raised by the driver itself
        return exc.sqlstate in RETRYABLE_SQLSTATES
    orig = getattr(exc, "orig", None)
    state = getattr(orig, "sqlstate", None) or getattr(
        getattr(orig, "__cause__", None), "sqlstate", None
    )
    return isinstance(exc, DBAPIError) and state in RETRYABLE_SQLSTATES


async def with_retries(work: Callable[[], Awaitable[T]], *, attempts: int = 3) -> T:
    """Run a whole transaction again when Postgres aborted it for a deadlock or serialization."""
    for attempt in range(1, attempts + 1):
        try:
            return await work()
        except (DBAPIError, asyncpg.PostgresError) as exc:
            if attempt == attempts or not _retryable(exc):
                raise
            await asyncio.sleep(0.01 * attempt)
    raise AssertionError("unreachable")
