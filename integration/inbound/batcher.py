"""Group commit for the webhook: concurrent requests share one transaction.

A webhook request is a small transaction, and on a busy server most of its cost is the
transaction itself (round trips, WAL flush), not its rows. So requests hand their messages
to a few writer tasks; each writer takes everything that queued up while its previous
transaction ran, and writes it all in one transaction with the same set-based statements a
batch uses. Every request still gets its answer only after the commit that holds its
messages: nothing is acknowledged early. At low load a writer finds one request and writes it
at once, so there is no added wait; under load, transactions grow instead of queueing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from integration.crypto import SecretBox, signature_valid
from integration.environments import service as environments
from integration.environments.service import KeyMatch
from integration.errors import AppError, Unauthorized, Unavailable
from integration.inbound import service
from integration.spec import Message
from integration.store.db import driver_transaction, is_unavailable, with_retries

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Parsed:
    items: list[Any]
    validated: service.Validated


@dataclass(slots=True)
class Submission:
    key: str
    body: bytes
    signature: str | None
    parsed: Parsed | AppError  # a body error is answered only once the key is known good
    future: asyncio.Future[tuple[int, int]] = field(repr=False)


@dataclass(slots=True)
class _Plan:
    """What one transaction writes, and which submission gets which answer."""

    by_env: dict[uuid.UUID, tuple[KeyMatch, list[Message]]] = field(default_factory=dict)
    answers: list[tuple[Submission, AppError | None, uuid.UUID | None]] = field(
        default_factory=list
    )


class IngestBatcher:
    def __init__(
        self, engine: AsyncEngine, box: SecretBox, *, writers: int = 2, max_messages: int = 500
    ) -> None:
        self._engine = engine
        self._box = box
        self._writers = writers
        self._max_messages = max_messages
        self._queue: asyncio.Queue[Submission] = asyncio.Queue()
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

    async def submit(
        self, key: str, body: bytes, signature: str | None, parsed: Parsed | AppError
    ) -> tuple[int, int]:
        """Queue one request's messages; returns (stored, duplicates) once committed."""
        assert self._loop is not None, "start() first"
        future: asyncio.Future[tuple[int, int]] = self._loop.create_future()
        self._queue.put_nowait(Submission(key, body, signature, parsed, future))
        return await future

    async def _writer(self) -> None:
        while True:
            batch = [await self._queue.get()]
            size = _size(batch[0])
            while not self._queue.empty() and size < self._max_messages:
                batch.append(self._queue.get_nowait())
                size += _size(batch[-1])
            try:
                await self._write(batch)
            except Exception as exc:
                # A writer must outlive any bug of ours, or every later request would wait forever.
                log.exception("grouped write failed unexpectedly")
                _fail(batch, exc)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _write(self, batch: list[Submission]) -> None:
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
            _fail(batch, exc)  # the database is away: every request of the batch says so
            return
        for sub, answer in zip(batch, answers, strict=True):
            if sub.future.done():
                continue  # the client went away; its messages are stored all the same
            if isinstance(answer, AppError):
                sub.future.set_exception(answer)
            else:
                sub.future.set_result(answer)

    async def _transaction(self, batch: list[Submission]) -> list[tuple[int, int] | AppError]:
        async with driver_transaction(self._engine) as pg:
            plan = await self._plan(pg, batch)
            new: set[tuple[uuid.UUID, str]] = set()
            # Environments in a fixed order, so concurrent writers lock rows in the same order.
            for env_id in sorted(plan.by_env):
                env, messages = plan.by_env[env_id]
                stored = await service.store(pg, env.id, env.company_property, messages)
                new.update((env_id, message_id) for message_id in stored)
        return _answers(plan, new)

    async def _plan(self, pg: asyncpg.Connection, batch: list[Submission]) -> _Plan:
        plan = _Plan()
        envs = await environments.match_webhook_keys(pg, {sub.key for sub in batch})
        for sub in batch:
            env = envs.get(sub.key)
            error = _refusal(env, sub, self._box)
            plan.answers.append((sub, error, env.id if env else None))
            if error is None and env is not None and isinstance(sub.parsed, Parsed):
                messages = plan.by_env.setdefault(env.id, (env, []))[1]
                messages.extend(sub.parsed.validated.messages)
        return plan


def _fail(batch: list[Submission], exc: BaseException) -> None:
    for sub in batch:
        if not sub.future.done():
            sub.future.set_exception(exc)


def _size(sub: Submission) -> int:
    return len(sub.parsed.validated.messages) if isinstance(sub.parsed, Parsed) else 0


def _refusal(env: KeyMatch | None, sub: Submission, box: SecretBox) -> AppError | None:
    """Why this request is refused, in the order a caller should learn it: key, signature, body."""
    if env is None:
        return Unauthorized("unknown webhook key", error="unknown_webhook_key")
    secret = environments.signing_secret(env, box)
    if secret and not signature_valid(secret, sub.body, sub.signature):
        return Unauthorized(
            "X-Signature is missing or is not the HMAC-SHA1 of the body with this environment's"
            " signing secret",
            error="invalid_signature",
        )
    return sub.parsed if isinstance(sub.parsed, AppError) else None


def _answers(plan: _Plan, new: set[tuple[uuid.UUID, str]]) -> list[tuple[int, int] | AppError]:
    """(stored, duplicates) per request. A messageId new to its environment counts as stored
    for the first request of the batch that carried it, and as a duplicate for any other."""
    claimed: set[tuple[uuid.UUID, str]] = set()
    out: list[tuple[int, int] | AppError] = []
    for sub, error, env_id in plan.answers:
        if error is not None:
            out.append(error)
            continue
        assert env_id is not None and isinstance(sub.parsed, Parsed)  # else `_refusal` said why
        stored = duplicates = 0
        for m in sub.parsed.validated.messages:
            key = (env_id, m.message_id)
            if key in new and key not in claimed:
                claimed.add(key)
                stored += 1
            else:
                duplicates += 1
        out.append((stored, duplicates))
    return out
