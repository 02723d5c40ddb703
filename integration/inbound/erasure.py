"""Erasing a person (GDPR): one code path for Segment's `delete` calls and the admin API.

Everything an environment holds about a userId goes in one transaction: profile and traits,
the anonymous ids linked to it, memberships, its events and its devices' anonymous events, and
its outbound messages. What stays, and none of it names the person (integration/inbound/digests.py):
- an audit row in `deletions` with an HMAC of the userId under the install's key, when, what was
  removed and who asked, for an erasure that removed something;
- the keyed digests of the removed messages' messageIds, and of each Segment delete's own, so
  that a redelivered copy of either changes nothing;
- for a Segment delete of a userId the environment never held, one more in a per-environment
  count (`erasure_counts`) instead of an audit row: thousands of such deletes leave one row.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from integration.errors import NotFound
from integration.inbound import repository
from integration.inbound.digests import InstallKey
from integration.store.db import driver_transaction

SEGMENT = "segment"
ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Erased:
    removed: dict[str, int]  # rows per table
    repeated: bool = False  # the same delete (by messageId) was carried out before: no-op
    # The ids the person was known by (userId and anonymous ids), for the live view's rings.
    ids: list[str] = field(default_factory=list, compare=False)

    @property
    def anything(self) -> bool:
        return any(self.removed.values())

    @property
    def reported(self) -> dict[str, int]:
        """Rows removed per table as told to whoever asked: outbound messages only when
        there were some."""
        return {k: v for k, v in self.removed.items() if k != "outbox" or v}


async def erase_user(
    pg: asyncpg.Connection,
    env_id: uuid.UUID,
    user_id: str,
    key: InstallKey,
    *,
    requested_by: str,
    message_id: str | None = None,
) -> Erased:
    """Erase `user_id` in this environment, in the caller's transaction, and audit it. A delete
    whose messageId was carried out before is `repeated` and erases nothing."""
    if message_id is not None and not await repository.claim_delete(pg, env_id, message_id, key):
        return Erased({}, repeated=True)
    removed = await repository.erase(pg, env_id, user_id, key)
    erased = Erased(removed.counts, ids=[user_id, *removed.devices])
    if erased.anything:
        await repository.record_deletion(
            pg,
            env_id,
            key.hexdigest(user_id),
            message_id=message_id,
            requested_by=requested_by,
            removed=removed.counts,
        )
    return erased


async def count_unmatched(pg: asyncpg.Connection, env_id: uuid.UUID, deletes: int) -> None:
    """Segment deletes of userIds the environment never held: counted, not each audited."""
    await repository.count_unmatched(pg, env_id, deletes)


async def erase_by_admin(
    engine: AsyncEngine, env_id: uuid.UUID, user_id: str, key: InstallKey
) -> Erased:
    """The admin API's data-subject deletion. NotFound (and no audit row) when the environment
    holds nothing about this userId."""
    if "\x00" in user_id:  # Postgres text cannot hold NUL, so nothing can be stored under it
        raise NotFound(f"no user {user_id!r} in this environment")
    try:
        async with driver_transaction(engine) as pg:
            erased = await erase_user(pg, env_id, user_id, key, requested_by=ADMIN)
            if not erased.anything:
                raise NotFound(f"no user {user_id!r} in this environment")
    except asyncpg.ForeignKeyViolationError:
        raise NotFound("no such environment") from None
    return erased
