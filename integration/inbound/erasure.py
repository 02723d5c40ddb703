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
from integration.inbound import live, repository
from integration.inbound.digests import InstallKey
from integration.spec import Message, is_derived
from integration.store.db import driver_transaction

SEGMENT = "segment"
ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Erased:
    removed: dict[str, int]  # rows per table
    repeated: bool = False  # the same delete (by messageId) was carried out before: no-op
    # The ids the person was known by (userId and anonymous ids), for the live view's rings.
    ids: list[str] = field(default_factory=list, compare=False)
    # Rows of the merge log and its conflicts that named them: an id merged into another user
    # may be named there and nowhere else.
    identity_rows: int = field(default=0, compare=False)

    @property
    def anything(self) -> bool:
        return any(self.removed.values()) or self.identity_rows > 0

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
    return await _erase(pg, env_id, user_id, key, requested_by, message_id)


async def _erase(
    pg: asyncpg.Connection,
    env_id: uuid.UUID,
    user_id: str,
    key: InstallKey,
    requested_by: str,
    message_id: str | None,
) -> Erased:
    removed = await repository.erase(pg, env_id, user_id, key)
    erased = Erased(removed.counts, ids=[user_id, *removed.devices], identity_rows=removed.identity)
    if erased.anything:
        await repository.record_deletion(
            pg,
            env_id,
            key.hexdigest(user_id),
            # Segment's id of the request, to match it to Segment's deletion job; not one we
            # derived from the content, which is an unkeyed digest of the userId among others.
            message_id=None if is_derived(message_id) else message_id,
            requested_by=requested_by,
            removed=removed.counts,
        )
    return erased


async def carry_out_deletes(
    pg: asyncpg.Connection, env_id: uuid.UUID, deletes: list[Message], key: InstallKey
) -> list[Erased]:
    """Segment deletes that came together (a run of them in one request), one answer each: a
    delete carried out before is `repeated`; one of a userId the environment holds nothing
    about removes nothing and costs no erasure (two set-based statements decide both for the
    whole run); the rest erase, in order."""
    claimed = await repository.claim_deletes(pg, env_id, [m.message_id for m in deletes], key)
    present = await repository.held(
        pg, env_id, [m.user_id for m in deletes if m.message_id in claimed and m.user_id]
    )
    out: list[Erased] = []
    for m in deletes:
        if m.message_id not in claimed or not m.user_id:
            out.append(Erased({}, repeated=True))
            continue
        claimed.discard(m.message_id)  # a second copy in the same run is a repeat
        if m.user_id not in present:
            out.append(Erased(dict.fromkeys(repository.ERASED_TABLES, 0), ids=[m.user_id]))
            continue
        out.append(await _erase(pg, env_id, m.user_id, key, SEGMENT, m.message_id))
    return out


async def announce(
    pg: asyncpg.Connection, env_id: uuid.UUID, ids: list[str], key: InstallKey
) -> None:
    """Every API process forgets these ids' entries in its live-view rings, once the caller's
    transaction commits (a delete that found nothing in the store may still find a refused
    message of the person there)."""
    if ids:
        await repository.announce(pg, live.ERASED_CHANNEL, live.announcements(env_id, ids, key))


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
            await announce(pg, env_id, erased.ids, key)
    except asyncpg.ForeignKeyViolationError:
        raise NotFound("no such environment") from None
    return erased
