"""Group commit for the webhook: concurrent requests share one transaction.

A webhook request is a small transaction, and on a busy server most of its cost is the
transaction itself (round trips, WAL flush), not its rows. So requests hand their messages
to a few writer tasks; each writer takes everything that queued up while its previous
transaction ran, and writes it all in one transaction with the same set-based statements a
batch uses. Every request still gets its answer only after the commit that holds its
messages: nothing is acknowledged early. At low load a writer finds one request and writes it
at once, so there is no added wait; under load, transactions grow instead of queueing.

It knows nothing of keys, signatures or HTTP: a submission is an environment and its valid
messages, already authenticated and validated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from integration.environments.identity import DEFAULT_RULES, IdentityRules
from integration.errors import Unavailable
from integration.inbound import erasure, ingest, ledger, planned
from integration.inbound.digests import InstallKey
from integration.plans.check import Plan
from integration.spec import DELETE, Message
from integration.store.db import driver_transaction, is_unavailable, with_retries

log = logging.getLogger(__name__)

# A writer never waits on a lock for long: a lock held elsewhere (a migration, an operator's
# session) must turn into a 503 that Segment retries, not a request that hangs past its timeout.
WRITER_LIMITS = "SET LOCAL lock_timeout = '3s'; SET LOCAL statement_timeout = '10s'"


@dataclass(frozen=True, slots=True)
class Target:
    """The environment a submission is written to, as the webhook found it by its key."""

    id: uuid.UUID
    company_property: str
    identity: IdentityRules = DEFAULT_RULES
    plan: Plan | None = None  # the inbound tracking plan in force (integration/inbound/planned.py)


@dataclass(slots=True)
class Written:
    """One request's outcome: messages new to the store, redeliveries, and what its `delete`
    calls removed (None when it had none)."""

    stored: int = 0
    duplicates: int = 0
    deleted: dict[str, int] | None = None
    # Which messages were duplicates, for the console's live view (not part of the answer).
    duplicate_ids: list[str] = field(default_factory=list, compare=False)
    # The ids of the people its deletes erased, whom the live view must forget.
    erased_ids: list[str] = field(default_factory=list, compare=False)
    # Of the stored: how many were stored as anonymous, their userId being a blocked id.
    blocked: int = field(default=0, compare=False)
    # Held whole by the tracking plan, neither stored nor refused (for the live view too).
    quarantined_ids: list[str] = field(default_factory=list, compare=False)

    @property
    def quarantined(self) -> int:
        return len(self.quarantined_ids)

    def add_erasure(self, erased: erasure.Erased) -> None:
        if erased.repeated:
            self.duplicates += 1
        self.erased_ids += erased.ids
        totals = self.deleted if self.deleted is not None else {}
        for table, count in erased.removed.items():
            totals[table] = totals.get(table, 0) + count
        self.deleted = totals


class EnvironmentGone(Exception):
    """The environment was deleted between authentication and the write."""


@dataclass(slots=True)
class _Submission:
    target: Target
    messages: list[Message]
    future: asyncio.Future[Written] = field(repr=False)
    # What the request had refused (reason: how many), counted with its messages.
    refused: dict[str, int] = field(default_factory=dict)
    # What its tracking plan held back of its messages (`messages` are the rest).
    held: planned.Held = field(default_factory=planned.Held)

    @property
    def erases(self) -> bool:
        return any(m.type == DELETE for m in self.messages)


class GroupCommit:
    def __init__(
        self, engine: AsyncEngine, key: InstallKey, *, writers: int = 2, max_messages: int = 500
    ) -> None:
        self._engine = engine
        self._key = key
        self._writers = writers
        self._max_messages = max_messages
        self._queue: asyncio.Queue[_Submission] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        # Kept: asyncio.get_running_loop() checks the process id, a system call per request.
        self._loop = asyncio.get_running_loop()
        self._tasks = [asyncio.create_task(self._writer()) for _ in range(self._writers)]

    async def stop(self) -> None:
        """Finish what was submitted (for a while), then stop the writers."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout=10)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        while not self._queue.empty():
            self._queue.get_nowait().future.set_exception(
                Unavailable("the server is shutting down; retry", error="shutting_down")
            )

    def submit(
        self, target: Target, messages: list[Message], refused: dict[str, int] | None = None
    ) -> asyncio.Future[Written]:
        """Queue one request's messages (and the ledger's count of what it refused, which may
        be all it brings); the future resolves once they are committed. The writers own the
        future: a caller that stops waiting does not undo the write."""
        assert self._loop is not None, "start() first"
        future: asyncio.Future[Written] = self._loop.create_future()
        self._queue.put_nowait(_Submission(target, messages, future, refused or {}))
        return future

    async def _writer(self) -> None:
        while True:
            batch = [await self._queue.get()]
            size = len(batch[0].messages)
            while not self._queue.empty() and size < self._max_messages:
                batch.append(self._queue.get_nowait())
                size += len(batch[-1].messages)
            try:
                await self._write(batch)
            except Exception as exc:
                # A writer must outlive any bug of ours, or every later request would wait forever.
                log.exception("grouped write failed unexpectedly")
                _fail(batch, exc)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _write(self, batch: list[_Submission]) -> None:
        try:
            answers = await with_retries(lambda: self._transaction(batch))
        except Exception as exc:
            if len(batch) > 1 and not is_unavailable(exc):
                # One request's data broke the shared transaction: write each on its own, so
                # only that request fails.
                log.warning("a grouped write failed (%s); writing one by one", type(exc).__name__)
                for sub in batch:
                    await self._write([sub])
                return
            _fail(batch, exc)
            return
        for sub, answer in zip(batch, answers, strict=True):
            if not sub.future.done():
                sub.future.set_result(answer)

    async def _transaction(self, batch: list[_Submission]) -> list[Written]:
        async with driver_transaction(self._engine) as pg:
            await pg.execute(WRITER_LIMITS)
            try:
                batch = await _checked(pg, batch, self._key)
                if any(sub.erases for sub in batch):
                    # Deletions are rare and order matters around them: request by request.
                    answers = [await _in_order(pg, sub, self._key) for sub in batch]
                else:
                    answers = _tally(batch, *await _merged(pg, batch, self._key))
                await _count(pg, batch, answers)
            except asyncpg.ForeignKeyViolationError:
                raise EnvironmentGone() from None
        for sub, answer in zip(batch, answers, strict=True):
            ledger.observe(_counts(sub, answer))
        return [_with_held(sub, answer) for sub, answer in zip(batch, answers, strict=True)]


async def _checked(
    pg: asyncpg.Connection, batch: list[_Submission], key: InstallKey
) -> list[_Submission]:
    """The submissions as their tracking plans let them be stored, in this transaction
    (integration/inbound/planned.py). New submissions: a retried transaction judges the
    messages as they came again."""
    if all(s.target.plan is None for s in batch):
        return batch  # most environments have no plan: nothing to judge
    requests = [planned.Request(s.target.id, s.target.plan, s.messages) for s in batch]
    judged = await planned.check(pg, requests, key)
    return [replace(s, messages=m, held=held) for s, (m, held) in zip(batch, judged, strict=True)]


def _with_held(sub: _Submission, written: Written) -> Written:
    """A request's answer with what its plan held: kept in quarantine, or redelivered."""
    written.quarantined_ids = sub.held.quarantined
    written.duplicates += len(sub.held.again)
    written.duplicate_ids += sub.held.again
    return written


async def _merged(
    pg: asyncpg.Connection, batch: list[_Submission], key: InstallKey
) -> tuple[set[tuple[uuid.UUID, str]], set[tuple[uuid.UUID, str]]]:
    """All submissions' messages written together, environment by environment in a fixed
    order (so concurrent writers lock rows in the same order). Returns the new messages, and
    those of them stored as anonymous (a blocked userId), by environment and messageId."""
    by_env: dict[uuid.UUID, tuple[Target, list[Message]]] = {}
    for sub in batch:
        if sub.messages:  # a request refused whole brings only its count
            by_env.setdefault(sub.target.id, (sub.target, []))[1].extend(sub.messages)
    new: set[tuple[uuid.UUID, str]] = set()
    blocked: set[tuple[uuid.UUID, str]] = set()
    for env_id in sorted(by_env):
        target, messages = by_env[env_id]
        stored = await ingest.store(
            pg, env_id, target.company_property, messages, key, target.identity
        )
        new.update((env_id, message_id) for message_id in stored.new)
        blocked.update((env_id, message_id) for message_id in stored.blocked)
    return new, blocked


def _counts(sub: _Submission, written: Written) -> ledger.Counts:
    """A request's part of the ledger: each message it brought was stored or a duplicate, or
    held by its tracking plan (quarantined, or a duplicate of one quarantined before); and,
    apart, how many were stored unmapped (a duplicate's failed mapping is not counted again)."""
    stored = len(sub.messages) - written.duplicates
    duplicates = written.duplicates + len(sub.held.again)
    again = Counter(written.duplicate_ids)
    failed = 0
    for m in sub.messages:
        if m.mapping_error is not None:
            if again[m.message_id]:
                again[m.message_id] -= 1
            else:
                failed += 1
    return ledger.Counts(
        stored,
        duplicates,
        dict(sub.refused),
        written.blocked,
        mapping_failed=failed,
        quarantined=len(sub.held.quarantined),
    )


async def _count(pg: asyncpg.Connection, batch: list[_Submission], answers: list[Written]) -> None:
    """The ledger's counts and the redeliveries, in the transaction that wrote the messages."""
    counts: dict[uuid.UUID, ledger.Counts] = {}
    again: list[tuple[uuid.UUID, str]] = []
    for sub, written in zip(batch, answers, strict=True):
        counts.setdefault(sub.target.id, ledger.Counts()).add(_counts(sub, written))
        again += [(sub.target.id, message_id) for message_id in written.duplicate_ids]
    await ledger.record(pg, counts, again)


def _tally(
    batch: list[_Submission],
    new: set[tuple[uuid.UUID, str]],
    blocked: set[tuple[uuid.UUID, str]],
) -> list[Written]:
    """A messageId new to its environment counts as stored for the first request of the batch
    that carried it (and as blocked too when it was stored as anonymous for its blocked
    userId), and as a duplicate for any other."""
    claimed: set[tuple[uuid.UUID, str]] = set()
    out: list[Written] = []
    for sub in batch:
        written = Written()
        for m in sub.messages:
            key = (sub.target.id, m.message_id)
            if key in new and key not in claimed:
                claimed.add(key)
                written.stored += 1
                written.blocked += key in blocked
            else:
                written.duplicates += 1
                written.duplicate_ids.append(m.message_id)
        out.append(written)
    return out


async def _in_order(pg: asyncpg.Connection, sub: _Submission, key: InstallKey) -> Written:
    """A request with `delete` calls: the messages before a delete are stored before it erases,
    the ones after it start the person's fresh profile. Consecutive deletes go together."""
    written = Written()
    unmatched = 0
    env_id = sub.target.id
    for deletes, run in _runs(sub.messages):
        if not deletes:
            stored = await ingest.store(
                pg, env_id, sub.target.company_property, run, key, sub.target.identity
            )
            part = _Submission(sub.target, run, sub.future)
            [counts] = _tally(
                [part], {(env_id, i) for i in stored.new}, {(env_id, i) for i in stored.blocked}
            )
            written.stored += counts.stored
            written.blocked += counts.blocked
            written.duplicates += counts.duplicates
            written.duplicate_ids += counts.duplicate_ids
            continue
        for erased in await erasure.carry_out_deletes(pg, env_id, run, key):
            written.add_erasure(erased)
            unmatched += not erased.repeated and not erased.anything
    await erasure.count_unmatched(pg, env_id, unmatched)
    await erasure.announce(pg, env_id, written.erased_ids, key)
    return written


def _runs(messages: list[Message]) -> list[tuple[bool, list[Message]]]:
    """The messages in runs of deletes and of the other types, in order: (deletes?, run)."""
    runs: list[tuple[bool, list[Message]]] = []
    for m in messages:
        deletes = m.type == DELETE
        if runs and runs[-1][0] == deletes:
            runs[-1][1].append(m)
        else:
            runs.append((deletes, [m]))
    return runs


def _fail(batch: list[_Submission], exc: BaseException) -> None:
    for sub in batch:
        if not sub.future.done():
            sub.future.set_exception(exc)
