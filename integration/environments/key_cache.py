"""Which environment a key opens, remembered in each API process and forgotten the moment any
environment changes.

Every webhook and intake request is authenticated by its key's digest. Looking the digest up in
Postgres for each request took a fifth of a webhook request's CPU and one more round trip
(bench/results/profile-inbound.md). Each process listens for `NOTIFY environments_changed` on a
connection of its own and empties its caches on every notification, and at once (without
waiting for the notification) when the change was committed by this process. The notification
comes from two places:
- a process that commits a change to `environments` through the ORM (`transaction()`,
  integration/store/db.py) sends it after the commit, in a transaction of its own, before
  `transaction()` returns;
- on plain Postgres, a trigger on `environments` (migration 0007) and one on `previous_keys`
  (0009) send it too, whoever changes the tables. On Citus there are no such triggers: a write
  to a reference table commits in two phases, and a prepared transaction cannot NOTIFY
  (migration 0012_citus drops them).
Besides, on that same connection, each process reads a fingerprint of both tables every
POLL_SECONDS and empties its caches when it differs: a change made with SQL on Citus, or by a
process connected to another coordinator, is in force within that time on every kind of database.
The tracking plans in force are cached the same way (integration/plans/cache.py): a new version
is announced after its commit like an environment change, and is in the fingerprint too (with
no trigger: a plan changed with SQL is found by the fingerprint alone).

The cache is trusted only while that connection is up. From the moment it is lost until it is
back, every request looks its key up in the database, and the caches are emptied again on
reconnecting since the notifications in between are gone. An entry found through a rotated-out
key lives no longer than that key's grace period, and no entry lives longer than `ttl` seconds:
the bound if a connection dies silently with a notification on it, until the health check finds
out. Every rotated-out key still working is its own entry, with its own end: however many
there are, each is forgotten when its own grace ends. Unknown keys are never remembered: a new
environment's key works at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, Protocol, TypeVar

import asyncpg
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session

from integration.metrics import KEY_CACHE_LISTENING, KEY_LOOKUPS
from integration.store.db import ENVIRONMENTS_CHANGED, SessionMaker
from integration.store.models import Environment, TrackingPlan

log = logging.getLogger(__name__)

CHANNEL = ENVIRONMENTS_CHANGED
HEALTH_CHECK_SECONDS = 5.0
# A rotated-out key must be refused within 2 s in every process, notification or not.
POLL_SECONDS = 1.0
# Any change to any environment's row changes it; a table of a few thousand rows reads in ~1 ms.
# Both tables that say which keys open what: environments and the rotated-out keys' graces;
# and the rows cached beside the keys, tracking plans (integration/plans/cache.py) and mappings
# (environments/current_mappings.py): their versions are only added (a change is a new version)
# or deleted with their environment (which changes the environments' part), so their count
# (and, for plans, the highest id) tells.
FINGERPRINT = (
    "SELECT (SELECT count(*) || ':' || coalesce(sum(hashtextextended(e::text, 0)), 0)"
    " FROM environments e) || '/' || (SELECT count(*) || ':'"
    " || coalesce(sum(hashtextextended(p::text, 0)), 0) FROM previous_keys p)"
    " || '/' || (SELECT count(*) || ':' || coalesce(max(t.id), 0) FROM tracking_plans t)"
    " || '/' || (SELECT count(*) FROM mappings)"
)
RECONNECT_MAX_SECONDS = 30.0


class Expiring(Protocol):
    @property
    def valid_until(self) -> datetime | None: ...


M = TypeVar("M", bound=Expiring)


@dataclass(frozen=True, slots=True)
class _Entry(Generic[M]):
    match: M
    expires: float  # time.monotonic()


class KeyCache(Generic[M]):
    """Digest -> match, for the keys this process has seen lately. `since` and `remember` guard
    a lookup that raced a change: a match read before a change is not kept after it."""

    def __init__(self, kind: str, ttl: float) -> None:
        self._entries: dict[str, _Entry[M]] = {}
        self._ttl = ttl
        self._generation = 0
        self.trusted = False  # set by the listener while it hears every change
        self._hits = KEY_LOOKUPS.labels(kind, "cache")
        self._misses = KEY_LOOKUPS.labels(kind, "database")

    def get(self, digest: str) -> M | None:
        entry = self._entries.get(digest) if self.trusted else None
        if entry is not None and entry.expires > time.monotonic():
            self._hits.inc()
            return entry.match
        self._misses.inc()
        return None

    def since(self) -> int:
        """Taken before a lookup, handed to `remember` after it."""
        return self._generation

    def remember(self, digest: str, match: M, since: int) -> None:
        if not self.trusted or since != self._generation or self._ttl <= 0:
            return
        now = time.monotonic()
        expires = now + self._ttl
        if match.valid_until is not None:
            left = (match.valid_until - datetime.now(UTC)).total_seconds()
            expires = min(expires, now + left)
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()  # keys are few; this many means churn, not a working set
        self._entries[digest] = _Entry(match, expires)

    def forget_all(self) -> None:
        self._generation += 1
        self._entries.clear()


MAX_ENTRIES = 10_000


class Forgetful(Protocol):
    """A cache the listener keeps: trusted while it hears every change, emptied on each (a
    KeyCache, the tracking plans', the mappings')."""

    trusted: bool

    def forget_all(self) -> None: ...


class ChangeListener:
    """Listens for `environments_changed` on a connection of its own (an engine of one) and
    empties the caches on each; marks them untrusted whenever it is not listening. `also`:
    more channels heard on the same connection, each with the handler of its payloads."""

    def __init__(
        self,
        engine: AsyncEngine,
        caches: Iterable[Forgetful],
        also: Mapping[str, Callable[[str], None]] | None = None,
    ) -> None:
        self._engine = engine
        self._caches = list(caches)
        self._also = dict(also or {})
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()
        self._woken = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="environments-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._distrust()
        await self._engine.dispose()

    def changed(self, *_: object) -> None:
        for cache in self._caches:
            cache.forget_all()

    def _heard(self, *_: object) -> None:
        self.changed()
        self._woken.set()

    async def _run(self) -> None:
        wait = 0.5
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "not listening for environment changes (%s); keys are looked up in the"
                    " database until it is back",
                    type(exc).__name__,
                )
            self._distrust()
            await asyncio.sleep(wait)
            wait = min(wait * 2, RECONNECT_MAX_SECONDS)

    async def _listen(self) -> None:
        async with self._engine.connect() as conn:
            pg = (await conn.get_raw_connection()).driver_connection
            assert pg is not None
            try:
                await pg.add_listener(CHANNEL, self._heard)
                for channel, handler in self._also.items():
                    await pg.add_listener(channel, _payload_to(handler))
                self.changed()  # whatever changed while nobody listened
                self._trust()
                await _watch(pg, self._woken, self.changed)
            finally:
                self._distrust()
                await conn.invalidate()  # never back to a pool: it holds a LISTEN

    def _trust(self) -> None:
        for cache in self._caches:
            cache.trusted = True
        self.listening.set()
        KEY_CACHE_LISTENING.set(1)

    def _distrust(self) -> None:
        self.listening.clear()
        KEY_CACHE_LISTENING.set(0)
        for cache in self._caches:
            cache.trusted = False
            cache.forget_all()


def _payload_to(handler: Callable[[str], None]) -> Callable[[object, int, str, str], None]:
    def heard(_connection: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            handler(payload)
        except Exception:  # a handler's bug must not take the key caches' listener down
            log.exception("a notification handler failed")

    return heard


async def _watch(pg: asyncpg.Connection, heard: asyncio.Event, changed: Callable[[], None]) -> None:
    """Reads the table's fingerprint every POLL_SECONDS, and at once after a notification (`heard`),
    calling `changed` when it moved; returns (raising) when the connection is lost: at once when
    the driver sees it closed, within POLL_SECONDS + HEALTH_CHECK_SECONDS when it hangs. Reading
    it after a notification keeps that change from being found again by the next poll."""
    lost = asyncio.Event()
    pg.add_termination_listener(lambda _: lost.set())
    seen = await asyncio.wait_for(pg.fetchval(FINGERPRINT), HEALTH_CHECK_SECONDS)
    while not lost.is_set():
        waiters = [asyncio.ensure_future(heard.wait()), asyncio.ensure_future(lost.wait())]
        await asyncio.wait(waiters, timeout=POLL_SECONDS, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        if lost.is_set():
            break
        heard.clear()
        now = await asyncio.wait_for(pg.fetchval(FINGERPRINT), HEALTH_CHECK_SECONDS)
        if now != seen:
            seen = now
            changed()
    raise ConnectionError("the listening connection was closed")


def forget_on_commit(sessions: SessionMaker, listener: ChangeListener) -> None:
    """Changes this process commits through the ORM empty its caches at the commit itself, so
    that an API call rotating a key is in force for the very next request to this process."""
    # A Session class of this sessionmaker's own, so that the events stay with it (and go with
    # it) rather than hooking every session of the process.
    maker = type("EnvironmentAwareSession", (sessions.kw.get("sync_session_class", Session),), {})
    sessions.configure(sync_session_class=maker)

    @event.listens_for(maker, "after_flush")
    def _note(session: Session, _context: object) -> None:
        touched = (*session.new, *session.dirty, *session.deleted)
        if any(isinstance(obj, Environment | TrackingPlan) for obj in touched):
            session.info[CHANNEL] = True

    @event.listens_for(maker, "after_commit")
    def _forget(session: Session) -> None:
        if session.info.pop(CHANNEL, False):
            listener.changed()

    @event.listens_for(maker, "after_rollback")
    def _discard(session: Session) -> None:
        session.info.pop(CHANNEL, None)
