"""Unmerge (issue #25): put back on their own profile the events, anonymous ids, memberships and
traits that one merge moved into a user, exactly as its log row and its recorded moves say
(merges.py made them).

- Events the merge moved go back to the user they had; anonymous-only events stored since
  through an id the merge moved follow that id back (`events.anonymous_only`).
- The merged user's profile comes back as it was, folded by the newest-wins rule into whatever
  later messages of that id made of it.
- A trait of the user that the merge set goes back to what the user's own messages say, unless
  a later message set it since (per key, by the same time rule).
- Memberships the merge gave the user go, unless one of the user's own events names the group.

It runs with the environment's writers of anonymous ids held off (`lock_environment`): a message
stored meanwhile would resolve its anonymousId through a link being taken back. Unmerging a
merge undone already changes nothing and answers the same (idempotent).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from integration.errors import Conflict, NotFound
from integration.inbound import repository
from integration.inbound.ingest import USER_TRAIT_TYPES
from integration.inbound.merges import Undo
from integration.store.db import driver_of

FIND = """
SELECT id, CAST(undo AS text) AS undo, undone_at FROM identity_log
WHERE environment_id = CAST($1 AS uuid) AND kind = 'merge' AND from_id = $2 AND user_id = $3
ORDER BY id DESC LIMIT 1
FOR UPDATE
"""

# A merge of the user into another since: what the merge moved may have moved on with it.
MERGED_SINCE = """
SELECT user_id FROM identity_log
WHERE environment_id = CAST($1 AS uuid) AND kind = 'merge' AND from_id = $2 AND id > $3
  AND undone_at IS NULL
ORDER BY id DESC LIMIT 1
"""

# The merged user's anonymous ids go back to it, and the previousId's link goes if the merge
# made it. Both only where they still point at the user.
IDS_BACK = """
WITH ids_back AS (
    UPDATE anonymous_ids a SET user_id = $2, updated_at = now()
    FROM identity_moves m
    WHERE m.environment_id = CAST($1 AS uuid) AND m.log_id = $4 AND m.anonymous_id IS NOT NULL
      AND a.environment_id = CAST($1 AS uuid) AND a.anonymous_id = m.anonymous_id
      AND a.user_id = $3
    RETURNING 1
),
unlinked AS (
    DELETE FROM anonymous_ids
    WHERE environment_id = CAST($1 AS uuid) AND anonymous_id = $2 AND user_id = $3 AND $5
    RETURNING 1
)
SELECT (SELECT count(*) FROM ids_back) AS ids_back, (SELECT count(*) FROM unlinked) AS unlinked
"""

# Events the merge moved, back to the user each had, where they still are on the user.
EVENTS_BACK = """
UPDATE events e SET user_id = m.prior_user_id
FROM identity_moves m
WHERE m.environment_id = CAST($1 AS uuid) AND m.log_id = $3 AND m.event_id IS NOT NULL
  AND e.environment_id = CAST($1 AS uuid) AND e.id = m.event_id AND e.user_id = $2
"""

# Anonymous-only events stored since the merge through an id it moved (or the previousId it
# linked): to whoever that id resolves to now.
RESOLVED_BACK = """
UPDATE events e SET user_id = (SELECT a.user_id FROM anonymous_ids a
                               WHERE a.environment_id = CAST($1 AS uuid)
                                 AND a.anonymous_id = e.anonymous_id)
WHERE e.environment_id = CAST($1 AS uuid) AND e.user_id = $3 AND e.anonymous_only
  AND e.anonymous_id IN (SELECT anonymous_id FROM identity_moves
                         WHERE environment_id = CAST($1 AS uuid) AND log_id = $4
                           AND anonymous_id IS NOT NULL
                         UNION ALL SELECT $2)
"""

# The merged user's memberships come back; the ones the merge gave the user go, unless an event
# of the user's own (after the moves back) names that group.
MEMBERSHIPS_BACK = """
WITH restored AS (
    INSERT INTO memberships (environment_id, user_id, group_id, created_at)
    SELECT CAST($1 AS uuid), $2, m ->> 0, CAST(m ->> 1 AS timestamptz)
    FROM jsonb_array_elements(CAST($4 AS jsonb)) AS m
    ORDER BY 3
    ON CONFLICT DO NOTHING
    RETURNING 1
),
taken AS (
    DELETE FROM memberships s
    WHERE s.environment_id = CAST($1 AS uuid) AND s.user_id = $3
      AND s.group_id IN (SELECT jsonb_array_elements_text(CAST($5 AS jsonb)))
      AND NOT EXISTS (SELECT 1 FROM events e
                      WHERE e.environment_id = CAST($1 AS uuid) AND e.user_id = $3
                        AND e.group_id = s.group_id)
    RETURNING 1
)
SELECT (SELECT count(*) FROM restored)
"""

# The merged user's profile as it was, folded into any the id has gained since. VALUES, not a
# SELECT: Citus sends an INSERT ... VALUES to the one shard, and pulls an INSERT ... SELECT
# without a table through the coordinator.
PROFILE_BACK = """
INSERT INTO users (environment_id, user_id, traits, trait_times, first_seen_at, last_seen_at)
VALUES (CAST($1 AS uuid), $2,
        CAST($3 AS jsonb) -> 'traits', CAST($3 AS jsonb) -> 'trait_times',
        CAST(CAST($3 AS jsonb) ->> 'first_seen_at' AS timestamptz),
        CAST(CAST($3 AS jsonb) ->> 'last_seen_at' AS timestamptz))
ON CONFLICT (environment_id, user_id) DO UPDATE SET
  traits = merge_traits(users.traits, users.trait_times, excluded.traits, excluded.trait_times),
  trait_times = merge_trait_times(users.trait_times, excluded.trait_times),
  first_seen_at = least(users.first_seen_at, excluded.first_seen_at),
  last_seen_at = greatest(users.last_seen_at, excluded.last_seen_at),
  updated_at = excluded.updated_at
"""

LOCK_USERS = """
SELECT count(*) FROM (SELECT 1 FROM users
                      WHERE environment_id = CAST($1 AS uuid) AND user_id IN ($2, $3)
                      ORDER BY user_id FOR UPDATE) AS locked
"""

USER_NOW = """
SELECT CAST(traits AS text) AS traits, CAST(trait_times AS text) AS trait_times
FROM users
WHERE environment_id = CAST($1 AS uuid) AND user_id = $2
FOR UPDATE
"""

# Per trait key, the newest value the user's own messages (still on it) carry.
OWN_TRAITS = """
SELECT DISTINCT ON (k) k, CAST(e.traits -> k AS text) AS value,
       extract(epoch FROM e.timestamp) AS time
FROM events e, jsonb_object_keys(e.traits) AS k
WHERE e.environment_id = CAST($1 AS uuid) AND e.user_id = $2 AND e.direction = 'inbound'
  AND NOT e.anonymous_only AND e.type = ANY($4) AND jsonb_typeof(e.traits) = 'object'
  AND k = ANY($3)
ORDER BY k, e.timestamp DESC, e.id DESC
"""

# The user's traits as worked out, and its first and last seen times back to what they were,
# each only if nothing moved it since the merge. The times come as timestamptz parameters:
# Citus refuses a text-to-timestamptz cast (a STABLE function) inside CASE or coalesce.
USER_BACK = """
UPDATE users SET
  traits = CAST($3 AS jsonb), trait_times = CAST($4 AS jsonb),
  first_seen_at = CASE WHEN first_seen_at = $5 THEN coalesce($6, first_seen_at)
                       ELSE first_seen_at END,
  last_seen_at = CASE WHEN last_seen_at = $7 THEN coalesce($8, last_seen_at)
                      ELSE last_seen_at END,
  updated_at = now()
WHERE environment_id = CAST($1 AS uuid) AND user_id = $2
"""

DONE = """
UPDATE identity_log SET undone_at = now(), undone_by = $3, undo = CAST($4 AS jsonb)
WHERE environment_id = CAST($1 AS uuid) AND id = $2
RETURNING undone_at
"""


@dataclass(frozen=True, slots=True)
class Unmerged:
    merge_id: int
    undone_at: datetime
    already_undone: bool
    restored: dict[str, int]


async def unmerge(
    session: AsyncSession, env: uuid.UUID, user_id: str, merged_id: str, actor: str
) -> Unmerged:
    """Take back the newest merge of `merged_id` into `user_id`, in the session's transaction."""
    return await unmerge_on(await driver_of(session), env, user_id, merged_id, actor)


async def unmerge_on(
    pg: asyncpg.Connection, env: uuid.UUID, user_id: str, merged_id: str, actor: str
) -> Unmerged:
    """`unmerge` on the driver's connection, in its transaction."""
    await repository.lock_environment(pg, env)
    found = await pg.fetchrow(FIND, env, merged_id, user_id)
    if found is None:
        raise NotFound(f"no merge of {merged_id!r} into this user", error="not_found")
    if found["undo"] is None:
        raise Conflict(
            "this merge was made before merges were recorded for unmerging; it cannot be undone",
            error="not_undoable",
        )
    undo = Undo.of(orjson.loads(found["undo"]))
    if found["undone_at"] is not None:
        return Unmerged(found["id"], found["undone_at"], True, undo.restored or {})
    since = await pg.fetchval(MERGED_SINCE, env, user_id, found["id"])
    if since is not None:
        raise Conflict(
            f"this user was merged into {since!r} since; unmerge that first",
            error="merged_since",
        )
    undo.restored = await _put_back(pg, env, (merged_id, user_id), found["id"], undo)
    undone_at = await pg.fetchval(DONE, env, found["id"], actor, undo.json())
    return Unmerged(found["id"], undone_at, False, undo.restored)


async def _put_back(
    pg: asyncpg.Connection, env: uuid.UUID, ids: tuple[str, str], log_id: int, undo: Undo
) -> dict[str, int]:
    previous, user = ids
    # Both profiles, in key order as ingest takes them, before any other row.
    await pg.execute(LOCK_USERS, env, previous, user)
    back = await pg.fetchrow(IDS_BACK, env, previous, user, log_id, undo.linked_previous)
    assert back is not None  # a SELECT of counts has its one row
    events = _rows(await pg.execute(EVENTS_BACK, env, user, log_id))
    events += _rows(await pg.execute(RESOLVED_BACK, env, previous, user, log_id))
    added = orjson.dumps(undo.memberships_added).decode()
    held = orjson.dumps(undo.memberships).decode()
    memberships = await pg.fetchval(MEMBERSHIPS_BACK, env, previous, user, held, added)
    if undo.previous is not None:
        await pg.execute(PROFILE_BACK, env, previous, orjson.dumps(undo.previous).decode())
    await _user_back(pg, env, user, undo)
    return {
        "events": events,
        "anonymous_ids": int(back["ids_back"]),
        "traits": len((undo.previous or {}).get("traits") or {}),
        "memberships": int(memberships),
    }


def _rows(status: str) -> int:
    """The row count of a command's status ("UPDATE 3")."""
    return int(status.rsplit(" ", 1)[-1])


async def _user_back(pg: asyncpg.Connection, env: uuid.UUID, user: str, undo: Undo) -> None:
    """The user's traits the merge set and nothing set since: back to the newest of what the
    user held before and what its own messages carry; first and last seen likewise."""
    now = await pg.fetchrow(USER_NOW, env, user)
    if now is None:
        return
    traits, times = orjson.loads(now["traits"]), orjson.loads(now["trait_times"])
    untouched = [
        key
        for key, change in undo.traits.items()
        if [traits.get(key), times.get(key)] == change["after"] and key in times
    ]
    if untouched:
        own = await pg.fetch(OWN_TRAITS, env, user, untouched, list(USER_TRAIT_TYPES))
        newest = {r["k"]: [orjson.loads(r["value"]), float(r["time"])] for r in own}
        for key in untouched:
            _settle(traits, times, key, undo.traits[key]["before"], newest.get(key))
    seen = undo.seen or {"before": {}, "after": {}}
    await pg.execute(
        USER_BACK,
        env,
        user,
        orjson.dumps(traits).decode(),
        orjson.dumps(times).decode(),
        *_seen_args(seen),
    )


def _settle(
    traits: dict[str, Any],
    times: dict[str, Any],
    key: str,
    before: list[Any] | None,
    own: list[Any] | None,
) -> None:
    """Set `key` to the newer of the value the user held before the merge and the newest its
    own messages carry; neither: the key goes."""
    candidates = [c for c in (before, own) if c is not None]
    if not candidates:
        traits.pop(key, None)
        times.pop(key, None)
        return
    value, time = max(candidates, key=lambda c: float(c[1]))
    traits[key], times[key] = value, time


def _seen_args(seen: dict[str, Any]) -> tuple[datetime | None, ...]:
    before, after = seen.get("before", {}), seen.get("after", {})
    return tuple(
        _instant(side.get(key))
        for key in ("first_seen_at", "last_seen_at")
        for side in (after, before)
    )


def _instant(stored: str | None) -> datetime | None:
    """A time as the undo holds it (ISO-8601, as Postgres writes a timestamptz into JSON)."""
    return None if stored is None else datetime.fromisoformat(stored)
