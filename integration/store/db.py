"""Engine and sessions. One place commits: `transaction()`."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

import asyncpg
import orjson
from sqlalchemy import event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session

from integration.config import Settings
from integration.errors import AppError, Unavailable
from integration.store import jobs
from integration.store.models import Environment, PreviousKey, TrackingPlan

SessionMaker = async_sessionmaker[AsyncSession]
log = logging.getLogger(__name__)
T = TypeVar("T")


def make_engine(
    settings: Settings, *, pool_size: int | None = None, name: str | None = None
) -> AsyncEngine:
    """The engine; `name` becomes the connections' application_name (pg_stat_activity)."""
    settings.require("database_url")
    assert settings.database_url is not None
    connect_args: dict[str, object] = {"timeout": 5, "command_timeout": 30}
    if name:
        connect_args["server_settings"] = {"application_name": name}
    return create_async_engine(
        settings.database_url,
        pool_size=pool_size or settings.db_pool_size,
        max_overflow=0,  # overflow connections churn under load; requests queue for one instead
        pool_recycle=1800,
        pool_timeout=4,  # a request answers 503 (retry) rather than queue for a connection long
        connect_args=connect_args,
        json_deserializer=_json_loads,
        # A failed statement's error would otherwise carry its parameters into the log:
        # payloads, traits, answers from remote hosts.
        hide_parameters=True,
    )


def _json_loads(text: str) -> Any:
    """jsonb as Python, by orjson (the worker reads every payload it sends), or by the standard
    library for what orjson refuses (numbers past 64 bits that an operator's SQL stored)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


async def ping(engine: AsyncEngine) -> bool:
    """True when the database answers a query."""
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:
        return False
    return True


# Every process's key cache listens on this channel (integration/environments/key_cache.py).
ENVIRONMENTS_CHANGED = "environments_changed"
_ANNOUNCE = "announce_environments_changed"


class AnnouncingSession(Session):
    """Notes whether a flush changed an environment (or its tracking plan, cached beside its
    keys), for `transaction()` to announce."""


@event.listens_for(AnnouncingSession, "after_flush")
def _note_environment_changes(session: Session, _context: object) -> None:
    changed = (*session.new, *session.dirty, *session.deleted)
    if any(isinstance(o, Environment | PreviousKey | TrackingPlan) for o in changed):
        session.info[_ANNOUNCE] = True


def announce_on_commit(session: AsyncSession) -> None:
    """A change the ORM cannot see (a core INSERT into `mappings`) that every process's caches
    must hear of: announced, and this process's own caches emptied, as an environment change."""
    session.info[_ANNOUNCE] = True
    session.info[ENVIRONMENTS_CHANGED] = True  # key_cache.forget_on_commit, at the commit


def make_sessionmaker(engine: AsyncEngine, *, enqueue: jobs.Enqueue | None = None) -> SessionMaker:
    """Sessions for `transaction()`. With `enqueue`, the jobs a transaction queued with
    `jobs.after_commit` are sent once it commits."""
    info = {jobs.ENQUEUER: enqueue} if enqueue is not None else {}
    return async_sessionmaker(
        engine, expire_on_commit=False, info=info, sync_session_class=AnnouncingSession
    )


async def _announce(session: AsyncSession) -> None:
    """NOTIFY the other processes of the environment change just committed, in a transaction
    of its own: inside the change's transaction it is impossible on Citus (a write to a reference
    table commits in two phases, and a prepared transaction cannot NOTIFY). A lost one is made
    up for by the listeners' fingerprint of the table, within a second."""
    try:
        async with session.begin():
            await session.execute(text(f"NOTIFY {ENVIRONMENTS_CHANGED}"))
    except Exception as exc:  # the change is committed: the fingerprint will find it
        log.warning("could not announce an environment change (%s)", type(exc).__name__)


@asynccontextmanager
async def transaction(sessions: SessionMaker) -> AsyncIterator[AsyncSession]:
    """A session whose work is committed on success and rolled back on any error; the jobs it
    queued for after the commit are sent then, and only then. An outage surfaces as
    `Unavailable` (503, retry), whatever SQLAlchemy or the driver called it."""
    try:
        async with sessions() as session:
            async with session.begin():
                yield session
            if session.info.pop(_ANNOUNCE, False):
                await _announce(session)
            await jobs.flush(session)
    except Exception as exc:
        if isinstance(exc, AppError) or not is_unavailable(exc):
            raise
        raise _unavailable() from exc


@asynccontextmanager
async def driver_connection(
    engine: AsyncEngine, *, transactional: bool = False
) -> AsyncIterator[asyncpg.Connection]:
    """asyncpg's own connection (yielded), taken from the engine's pool, in a transaction when
    asked. For the webhook's hot path, which runs the same few statements thousands of times a
    second: there SQLAlchemy's work per statement (cache lookups, parameter and result wrapping,
    greenlet switches) cost about 1.6 ms of CPU per transaction, several times the driver's own.

    An outage surfaces as `Unavailable` (503, retry), and the connection that saw it is
    invalidated: the pool learns of a dead connection only through SQLAlchemy's own calls."""
    try:
        async with engine.connect() as conn:
            pg = (await conn.get_raw_connection()).driver_connection
            assert pg is not None  # a checked-out connection always has one
            try:
                if transactional:
                    async with pg.transaction():
                        yield pg
                else:
                    yield pg
            except Exception as exc:
                if is_unavailable(exc) or pg.is_closed():
                    await conn.invalidate()
                    raise _unavailable() from exc
                raise
    except Exception as exc:
        if isinstance(exc, AppError) or not is_unavailable(exc):
            raise
        raise _unavailable() from exc


async def driver_of(session: AsyncSession) -> asyncpg.Connection:
    """The session's asyncpg connection, in the session's transaction: for statements written
    for the driver (its own placeholders and prepared-statement cache)."""
    raw = await (await session.connection()).get_raw_connection()
    driver: asyncpg.Connection = raw.driver_connection
    return driver


def driver_transaction(engine: AsyncEngine) -> AbstractAsyncContextManager[asyncpg.Connection]:
    """A transaction on asyncpg's own connection (see `driver_connection`)."""
    return driver_connection(engine, transactional=True)


def _unavailable() -> Unavailable:
    return Unavailable("the database is unreachable; retry later", error="database_unavailable")


# SQLSTATEs that say the database cannot serve right now, not that a query was wrong: connection
# exceptions (class 08), insufficient resources (53: too many connections, out of memory or disk),
# operator intervention (57P01-57P03: shutting down, starting up) and a statement or lock wait
# cut short by our own timeouts (57014, 55P03). A caller can only retry later.
UNAVAILABLE_CLASSES = ("08", "53")
UNAVAILABLE_SQLSTATES = {"57P01", "57P02", "57P03", "57014", "55P03"}


def is_unavailable(exc: BaseException) -> bool:
    """True for errors that mean the database could not serve the request, not that a query
    was wrong. Looks through SQLAlchemy's and the driver's wrapping to the cause."""
    for error in _chain(exc):
        if isinstance(error, Unavailable):
            return True
        if isinstance(error, OSError | TimeoutError | asyncpg.ConnectionDoesNotExistError):
            return True
        if isinstance(error, OperationalError | sa_exc.TimeoutError):
            return True
        if isinstance(error, DBAPIError) and error.connection_invalidated:
            return True
        state = getattr(error, "sqlstate", None)
        if isinstance(state, str) and (
            state in UNAVAILABLE_SQLSTATES or state.startswith(UNAVAILABLE_CLASSES)
        ):
            return True
    return False


def _chain(exc: BaseException) -> list[BaseException]:
    """The error, what SQLAlchemy wrapped (`orig`), and their causes and contexts."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo and len(seen) < 16:
        error = todo.pop()
        if error is None or any(error is s for s in seen):
            continue
        seen.append(error)
        todo += [getattr(error, "orig", None), error.__cause__, error.__context__]
    return seen


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
