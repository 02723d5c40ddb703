"""Jobs queued during a transaction, sent only once it commits, dropped if it rolls back.

A service that wants work done after its writes are visible (a delivery wake-up after new outbox
rows) calls `after_commit(session, ...)`; `store.db.transaction()` hands the jobs to the
session's enqueuer once the commit succeeded. The enqueuer is given to `make_sessionmaker`: the
API's and a host product's sessions send to the arq queue, a session without one drops them
(the worker's periodic sweep finds the rows anyway: Postgres is the truth, a job only says
"look now").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

JOBS = "after_commit_jobs"
ENQUEUER = "enqueue"


@dataclass(frozen=True, slots=True)
class Job:
    function: str
    args: tuple[str, ...]
    job_id: str | None = None


Enqueue = Callable[[Job], Awaitable[object]]


def after_commit(
    session: AsyncSession, function: str, *args: str, job_id: str | None = None
) -> None:
    """Queue `function(*args)` for after this session's transaction commits. The same job
    (by id) asked for twice in one transaction is sent once."""
    jobs: dict[object, Job] = session.info.setdefault(JOBS, {})
    jobs.setdefault(job_id or (function, args), Job(function, args, job_id))


def pending(session: AsyncSession) -> list[Job]:
    """The jobs this session will send after commit (and forgets them)."""
    jobs: dict[object, Job] = session.info.pop(JOBS, {})
    return list(jobs.values())


async def flush(session: AsyncSession) -> None:
    """Send what the committed transaction queued, through the session's enqueuer if any."""
    jobs = pending(session)
    enqueue: Enqueue | None = session.info.get(ENQUEUER)
    if enqueue is None:
        return
    for job in jobs:
        await enqueue(job)
