"""Waiting on something that may never answer (a frozen database, a partitioned Redis) without
being held by it: the caller gets `Unavailable` (503, retry) at its deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from integration.errors import Unavailable

T = TypeVar("T")


async def within(
    deadline: float,
    work: Awaitable[T],
    *,
    detail: str = "the database did not answer in time; retry later",
    error: str = "database_unavailable",
) -> T:
    """Await `work` until `deadline` (the event loop's clock), then give up with 503.

    The work runs as a task of its own and is left to finish when the caller gives up: cancelling
    a database call half-way would run its cleanup (a rollback, a pool return) against the same
    database that is not answering, and the caller would hang in it after all."""
    task = asyncio.ensure_future(work)
    if not task.done():
        # asyncio.wait, unlike wait_for(shield()), leaves the task be without wrapping it in
        # two more futures: this runs twice for every webhook request.
        remaining = deadline - asyncio.get_running_loop().time()
        try:
            await asyncio.wait((task,), timeout=max(remaining, 0.001))
        except asyncio.CancelledError:
            task.add_done_callback(_forget)
            raise
        if not task.done():
            task.add_done_callback(_forget)
            raise Unavailable(detail, error=error)
    return task.result()


def _forget(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log it as never retrieved
