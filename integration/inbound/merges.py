"""A merge of one id into a user, made so that it can be taken back (issue #25): every row it
moves is recorded (`identity_moves`), and what it changes that is no row of its own goes in its
merge-log row (`identity_log.undo`): the merged user's profile and memberships as they were, the
traits it gave the user and what they replaced, whether it linked the previousId.
integration/inbound/unmerge.py reads them back.

The caller holds the previousId (repository.lock_anonymous_ids), in the caller's transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Protocol

import asyncpg
import orjson


class Asked(Protocol):
    """The merge a message asked for (identity.Asked, or a conflict an operator applies)."""

    @property
    def from_id(self) -> str: ...  # the alias's previousId
    @property
    def user_id(self) -> str: ...
    @property
    def message_id(self) -> str: ...
    @property
    def at(self) -> datetime: ...  # the message's timestamp


# The two users' rows as they stand, locked in key order (as ingest locks users) until commit:
# a concurrent message of either id waits, so the snapshot is what the merge folds; and the
# previous user's memberships. JSON comes back as text: the connection may or may not decode it.
SNAPSHOT = """
SELECT
  CAST((SELECT coalesce(jsonb_object_agg(user_id, to_jsonb(p)), '{}'::jsonb)
        FROM (SELECT user_id, traits, trait_times, first_seen_at, last_seen_at FROM users
              WHERE environment_id = CAST($1 AS uuid) AND user_id IN ($2, $3)
              ORDER BY user_id FOR UPDATE) AS p) AS text) AS profiles,
  CAST((SELECT coalesce(jsonb_agg(jsonb_build_array(group_id, created_at) ORDER BY group_id),
                        '[]')
        FROM memberships WHERE environment_id = CAST($1 AS uuid) AND user_id = $2) AS text)
    AS memberships
"""

# The log row first: the moves name it.
LOG = """
INSERT INTO identity_log (environment_id, kind, from_id, user_id, message_id, rule, at)
VALUES (CAST($1 AS uuid), 'merge', $2, $3, $4, $5, $6)
RETURNING id
"""

# The rows that move, recorded as they move: the previousId itself (an anonymousId or an
# earlier userId, both now resolve to the user), the previous user's anonymous ids, and the
# events of the previous user or of the previousId as an anonymousId, each with its user before.
MOVE = """
WITH linked AS (
    INSERT INTO anonymous_ids (environment_id, anonymous_id, user_id)
    VALUES (CAST($1 AS uuid), $2, $3)
    ON CONFLICT DO NOTHING
    RETURNING 1
),
ids_moved AS (
    UPDATE anonymous_ids SET user_id = $3, updated_at = now()
    WHERE environment_id = CAST($1 AS uuid) AND user_id = $2
    RETURNING anonymous_id
),
events_moved AS (
    UPDATE events e SET user_id = $3
    FROM (SELECT id, user_id FROM events
          WHERE environment_id = CAST($1 AS uuid)
            AND (user_id = $2 OR (anonymous_id = $2 AND user_id IS NULL))) AS before
    WHERE e.environment_id = CAST($1 AS uuid) AND e.id = before.id
    RETURNING e.id, before.user_id AS prior
),
recorded AS (
    INSERT INTO identity_moves (environment_id, log_id, event_id, anonymous_id, prior_user_id)
    SELECT CAST($1 AS uuid), CAST($4 AS bigint), id, CAST(NULL AS text), prior FROM events_moved
    UNION ALL
    SELECT CAST($1 AS uuid), CAST($4 AS bigint), CAST(NULL AS bigint), anonymous_id, $2
    FROM ids_moved
    RETURNING 1
)
SELECT (SELECT count(*) FROM linked) AS linked, (SELECT count(*) FROM ids_moved) AS ids,
       (SELECT count(*) FROM events_moved) AS events, (SELECT count(*) FROM recorded) AS recorded
"""

# The earlier user's traits fold into the user by the newest-wins rule; its memberships are
# copied (the ones the user gains are returned) and its own rows go.
FOLD = """
WITH folded AS (
    INSERT INTO users (environment_id, user_id, traits, trait_times, first_seen_at, last_seen_at)
    SELECT environment_id, $3, traits, trait_times, first_seen_at, last_seen_at
    FROM users WHERE environment_id = CAST($1 AS uuid) AND user_id = $2
    ON CONFLICT (environment_id, user_id) DO UPDATE SET
      traits = merge_traits(users.traits, users.trait_times,
                            excluded.traits, excluded.trait_times),
      trait_times = merge_trait_times(users.trait_times, excluded.trait_times),
      first_seen_at = least(users.first_seen_at, excluded.first_seen_at),
      last_seen_at = greatest(users.last_seen_at, excluded.last_seen_at),
      updated_at = excluded.updated_at
    RETURNING traits, trait_times, first_seen_at, last_seen_at
),
memberships_added AS (
    INSERT INTO memberships (environment_id, user_id, group_id, created_at)
    SELECT environment_id, $3, group_id, created_at FROM memberships
    WHERE environment_id = CAST($1 AS uuid) AND user_id = $2
    ORDER BY group_id
    ON CONFLICT DO NOTHING
    RETURNING group_id
),
memberships_deleted AS (
    DELETE FROM memberships WHERE environment_id = CAST($1 AS uuid) AND user_id = $2
    RETURNING 1
),
user_deleted AS (
    DELETE FROM users WHERE environment_id = CAST($1 AS uuid) AND user_id = $2 RETURNING 1
)
SELECT CAST((SELECT to_jsonb(f) FROM folded f) AS text) AS profile,
       CAST((SELECT coalesce(jsonb_agg(group_id ORDER BY group_id), '[]')
             FROM memberships_added) AS text) AS memberships_added,
       (SELECT count(*) FROM memberships_deleted) AS memberships
"""

FINISH = """
UPDATE identity_log SET events_moved = $3, traits_moved = $4, memberships_moved = $5,
                        undo = CAST($6 AS jsonb)
WHERE environment_id = CAST($1 AS uuid) AND id = $2
"""


@dataclass(slots=True)
class Undo:
    """What a merge changed that is no row of its own; stored as the log row's `undo`."""

    # The previous user's profile as it was (traits, trait_times, first_seen_at, last_seen_at),
    # None when it had none; and its memberships, [groupId, created_at] each.
    previous: dict[str, Any] | None = None
    memberships: list[list[Any]] = field(default_factory=list)
    # The groups the user became a member of by this merge.
    memberships_added: list[str] = field(default_factory=list)
    # The user's traits the merge set: key -> {"before": [value, time] or None, "after": [...]}.
    traits: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The user's first and last seen times before and after (ISO-8601), the same way.
    seen: dict[str, Any] = field(default_factory=dict)
    linked_previous: bool = False  # the merge linked the previousId to the user
    # Filled in by the unmerge: what it put back.
    restored: dict[str, int] | None = None

    def json(self) -> str:
        return orjson.dumps(asdict(self)).decode()

    @classmethod
    def of(cls, stored: dict[str, Any]) -> Undo:
        return cls(**stored)


@dataclass(frozen=True, slots=True)
class Merged:
    log_id: int
    events: int
    traits: int
    memberships: int


def _traits_set(before: dict[str, Any] | None, after: dict[str, Any]) -> dict[str, Any]:
    """The keys whose value or time the merge changed on the user, with both sides."""
    old_traits, old_times = (before or {}).get("traits", {}), (before or {}).get("trait_times", {})
    changed = {}
    for key, time in after["trait_times"].items():
        value = after["traits"].get(key)
        if old_times.get(key) == time and old_traits.get(key) == value:
            continue
        was = [old_traits.get(key), old_times[key]] if key in old_times else None
        changed[key] = {"before": was, "after": [value, time]}
    return changed


def _seen(before: dict[str, Any] | None, after: dict[str, Any]) -> dict[str, Any]:
    keys = ("first_seen_at", "last_seen_at")
    return {
        "before": {k: (before or {}).get(k) for k in keys},
        "after": {k: after.get(k) for k in keys},
    }


async def merge(pg: asyncpg.Connection, env: uuid.UUID, asked: Asked, rule: str) -> Merged:
    """Fold `asked.from_id` (an alias's previousId) into `asked.user_id`: events, anonymous
    ids, traits and memberships, logged under `rule`, every move recorded for an unmerge."""
    previous, user = asked.from_id, asked.user_id
    snapshot = await pg.fetchrow(SNAPSHOT, env, previous, user)
    assert snapshot is not None  # a SELECT without FROM has its one row
    profiles = orjson.loads(snapshot["profiles"])
    log_id: int = await pg.fetchval(LOG, env, previous, user, asked.message_id, rule, asked.at)
    moved = await pg.fetchrow(MOVE, env, previous, user, log_id)
    folded = await pg.fetchrow(FOLD, env, previous, user)
    assert moved is not None and folded is not None
    undo = Undo(
        previous=profiles.get(previous),
        memberships=orjson.loads(snapshot["memberships"]),
        memberships_added=orjson.loads(folded["memberships_added"]),
        linked_previous=bool(moved["linked"]),
    )
    if folded["profile"] is not None:
        after = orjson.loads(folded["profile"])
        undo.traits = _traits_set(profiles.get(user), after)
        undo.seen = _seen(profiles.get(user), after)
    traits = len((undo.previous or {}).get("traits", {}))
    done = Merged(log_id, moved["events"], traits, folded["memberships"])
    await pg.execute(FINISH, env, log_id, done.events, traits, done.memberships, undo.json())
    return done
