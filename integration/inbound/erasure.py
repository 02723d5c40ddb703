"""Erasing a person (GDPR): one code path for Segment's `delete` calls and the admin API.

Everything an environment holds about a userId goes in one transaction: profile and traits,
the anonymous ids linked to it, memberships, its events and its devices' anonymous events, and
its outbound messages. What stays is an audit row in `deletions` with the SHA-256 of the userId,
when, what was removed and who asked; never the id itself.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from integration.errors import NotFound
from integration.inbound import repository
from integration.store.db import driver_transaction

SEGMENT = "segment"
ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Erased:
    removed: dict[str, int]  # rows per table
    repeated: bool = False  # the same delete (by messageId) was carried out before: no-op

    @property
    def anything(self) -> bool:
        return any(self.removed.values())

    @property
    def reported(self) -> dict[str, int]:
        """Rows removed per table as told to whoever asked: outbound messages only when
        there were some."""
        return {k: v for k, v in self.removed.items() if k != "outbox" or v}


def user_digest(user_id: str) -> str:
    return hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).hexdigest()


async def erase_user(
    pg: asyncpg.Connection,
    env_id: uuid.UUID,
    user_id: str,
    *,
    requested_by: str,
    message_id: str | None = None,
) -> Erased:
    """Erase `user_id` in this environment, in the caller's transaction, and audit it."""
    deletion = await repository.claim_deletion(
        pg, env_id, user_digest(user_id), message_id=message_id, requested_by=requested_by
    )
    if deletion is None:
        return Erased({}, repeated=True)
    removed = await repository.erase(pg, env_id, user_id)
    await repository.record_deletion(pg, env_id, deletion, removed)
    return Erased(removed)


async def erase_by_admin(engine: AsyncEngine, env_id: uuid.UUID, user_id: str) -> Erased:
    """The admin API's data-subject deletion. NotFound (and no audit row) when the environment
    holds nothing about this userId."""
    if "\x00" in user_id:  # Postgres text cannot hold NUL, so nothing can be stored under it
        raise NotFound(f"no user {user_id!r} in this environment")
    try:
        async with driver_transaction(engine) as pg:
            erased = await erase_user(pg, env_id, user_id, requested_by=ADMIN)
            if not erased.anything:
                raise NotFound(f"no user {user_id!r} in this environment")  # rolls back the audit
    except asyncpg.ForeignKeyViolationError:
        raise NotFound("no such environment") from None
    return erased
