"""Identity conflicts resolved by an operator (issue #25): a link or merge that ingest refused
(integration/inbound/identity.py) is applied now, as asked, or dismissed.

Each runs in the caller's transaction with the conflict's row locked (SELECT ... FOR UPDATE), so
two operators never apply one conflict twice: the second waits, then finds it applied and
answers the same. Every statement names the environment (Citus routes it to one shard).
"""

from __future__ import annotations

import uuid
from typing import Final

import asyncpg
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from integration.errors import Conflict, NotFound
from integration.http.pagination import MAX_ROW_ID
from integration.inbound import identity, merges, repository
from integration.store.db import driver_of
from integration.store.models import IdentityConflict

OPERATOR_RULE: Final = "operator"

LOCK = """
SELECT id, kind, from_id, user_id, message_id, at, state FROM identity_conflicts
WHERE environment_id = CAST($1 AS uuid) AND id = $2
FOR UPDATE
"""

RESOLVE = """
UPDATE identity_conflicts SET state = $3, resolved_at = now(), resolved_by = $4
WHERE environment_id = CAST($1 AS uuid) AND id = $2
"""

# The anonymousId now resolves to the user the message named, whoever held it (the operator's
# word stands over the first link and the limit); its anonymous events go with it, as a link
# made at ingest attaches them, with the memberships their companies give.
RELINK = """
WITH linked AS (
    INSERT INTO anonymous_ids (environment_id, anonymous_id, user_id)
    VALUES (CAST($1 AS uuid), $2, $3)
    ON CONFLICT (environment_id, anonymous_id) DO UPDATE SET user_id = excluded.user_id,
                                                             updated_at = excluded.updated_at
    RETURNING 1
),
attached AS (
    UPDATE events e SET user_id = $3
    WHERE e.environment_id = CAST($1 AS uuid) AND e.anonymous_id = $2 AND e.user_id IS NULL
    RETURNING e.group_id
),
memberships_added AS (
    INSERT INTO memberships (environment_id, user_id, group_id)
    SELECT DISTINCT CAST($1 AS uuid), $3, group_id FROM attached WHERE group_id IS NOT NULL
    ORDER BY 3
    ON CONFLICT DO NOTHING
    RETURNING 1
)
INSERT INTO identity_log (environment_id, kind, from_id, user_id, message_id, rule,
                          events_moved, memberships_moved, at)
SELECT CAST($1 AS uuid), 'link', $2, $3, $4, $5,
       (SELECT count(*) FROM attached), (SELECT count(*) FROM memberships_added), $6
FROM linked
"""


def conflict_id(raw: str) -> int:
    """The conflict id a path names; one that cannot be a row id names no conflict."""
    if not raw.isascii() or not raw.isdigit() or not 0 < int(raw) <= MAX_ROW_ID:
        raise NotFound("no such identity conflict in this environment", error="not_found")
    return int(raw)


async def _locked(pg: asyncpg.Connection, env: uuid.UUID, conflict_id: int) -> asyncpg.Record:
    row = await pg.fetchrow(LOCK, env, conflict_id)
    if row is None:
        raise NotFound("no such identity conflict in this environment", error="not_found")
    return row


async def _carry_out(pg: asyncpg.Connection, env: uuid.UUID, row: asyncpg.Record) -> None:
    """Make the link or merge the conflict's message asked for, logged under the operator's
    rule."""
    asked = identity.Asked(row["from_id"], row["user_id"], row["message_id"], row["at"])
    await repository.lock_anonymous_ids(pg, env, {asked.from_id})
    if row["kind"] == "identified_merge":
        sides = await identity.sides(pg, env, asked)
        await merges.merge(pg, env, asked, OPERATOR_RULE, sides)
        return
    await pg.execute(
        RELINK, env, asked.from_id, asked.user_id, asked.message_id, OPERATOR_RULE, asked.at
    )


async def apply(session: AsyncSession, env: uuid.UUID, conflict_id: int, actor: str) -> None:
    """Carry out the conflict now and mark it applied; applied already: nothing to do."""
    pg = await driver_of(session)
    row = await _locked(pg, env, conflict_id)
    if row["state"] == "dismissed":
        raise Conflict("this conflict was dismissed; it cannot be applied", error="dismissed")
    if row["state"] == "open":
        await _carry_out(pg, env, row)
        await pg.execute(RESOLVE, env, conflict_id, "applied", actor)


async def dismiss(session: AsyncSession, env: uuid.UUID, conflict_id: int, actor: str) -> None:
    """Mark the conflict dismissed, changing nothing else; dismissed already: nothing to do."""
    pg = await driver_of(session)
    row = await _locked(pg, env, conflict_id)
    if row["state"] == "applied":
        raise Conflict("this conflict was applied; it cannot be dismissed", error="applied")
    if row["state"] == "open":
        await pg.execute(RESOLVE, env, conflict_id, "dismissed", actor)


async def one(session: AsyncSession, env: uuid.UUID, conflict_id: int) -> IdentityConflict:
    found = await session.scalar(
        select(IdentityConflict)
        .where(IdentityConflict.environment_id == env, IdentityConflict.id == conflict_id)
        .execution_options(populate_existing=True)
    )
    if found is None:
        raise NotFound("no such identity conflict in this environment", error="not_found")
    return found


async def listing(
    session: AsyncSession, env: uuid.UUID, state: str | None, before_id: int | None, limit: int
) -> list[IdentityConflict]:
    """The environment's conflicts, newest first, of one state or all."""
    stmt = select(IdentityConflict).where(IdentityConflict.environment_id == env)
    if state is not None:
        stmt = stmt.where(IdentityConflict.state == state)
    if before_id is not None:
        stmt = stmt.where(IdentityConflict.id < before_id)
    return list(await session.scalars(stmt.order_by(IdentityConflict.id.desc()).limit(limit)))
