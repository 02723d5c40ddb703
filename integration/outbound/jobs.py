"""The outbound jobs the API asks the worker for: their ids, shared by both sides (their names
are in integration/queue.py, with every job's)."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from integration.queue import JobName
from integration.store.jobs import after_commit


def deliver_job_id(env_id: uuid.UUID | str) -> str:
    """Wake-ups after a commit share one id per environment: one queued at a time is enough.
    Extra jobs are harmless, though: a round takes the environment's lock or does nothing."""
    return f"{JobName.DELIVER}:{env_id}"


def wake_delivery(session: AsyncSession, env_id: uuid.UUID) -> None:
    """Deliver this environment's outbox as soon as the session's transaction commits."""
    after_commit(session, JobName.DELIVER, str(env_id), job_id=deliver_job_id(env_id))
