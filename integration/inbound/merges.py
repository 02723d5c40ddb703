"""A merge of one id into a user, made so that it can be taken back (issue #25): every row it
moves is recorded (`identity_moves`), and what it changes that is no row of its own goes in its
merge-log row (`identity_log.undo`): the merged user's profile and memberships as they were, the
traits it gave the user and what they replaced, whether it linked the previousId.
integration/inbound/unmerge.py reads them back.

The caller holds the previousId (repository.lock_anonymous_ids), in the caller's transaction.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
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


# What SIDES (identity.py) reads for a merge besides its guards: the two users' rows as they
# stand, locked in key order (as ingest locks users) until commit, so that a concurrent message
# of either id waits and the snapshot is what the merge folds; and the previous user's
# memberships, each saying whether the user is a member already. JSON comes back as text: the
# connection may or may not decode it.
SNAPSHOT_COLUMNS = """
  CAST((SELECT coalesce(jsonb_object_agg(user_id, to_jsonb(p)), '{}'::jsonb)
        FROM (SELECT user_id, traits, trait_times, first_seen_at, last_seen_at FROM users
              WHERE environment_id = CAST($1 AS uuid) AND user_id IN ($2, $3)
              ORDER BY user_id FOR UPDATE) AS p) AS text) AS profiles,
  CAST((SELECT coalesce(jsonb_agg(jsonb_build_array(
                          m.group_id, m.created_at,
                          EXISTS (SELECT 1 FROM memberships u
                                  WHERE u.environment_id = CAST($1 AS uuid) AND u.user_id = $3
                                    AND u.group_id = m.group_id))
                        ORDER BY m.group_id), '[]')
        FROM memberships m
        WHERE m.environment_id = CAST($1 AS uuid) AND m.user_id = $2) AS text) AS memberships
"""

# The whole merge in one statement: the log row, then every row that moves, recorded as it
# moves under that row's id (the previousId itself, an anonymousId or an earlier userId, now
# resolves to the user; the previous user's anonymous ids go to the user; the events of the
# previous user, or of the previousId as an anonymousId, each with its user before), the earlier
# user's traits folded in by the newest-wins rule, its memberships copied and its own rows gone.
# Each CTE touches rows no other one does; the undo (merges.Undo) is worked out beforehand from
# the snapshot SIDES took, since the rows it describes are locked.
MERGE = """
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
-- The previous user's events, and the previousId's anonymous ones, by two plain updates (each
-- row is in one or the other): a self-join to read the user each had, planned for a new
-- environment whose rows the statistics do not know yet, became a nested loop over all of them.
named_moved AS (
    UPDATE events SET user_id = $3
    WHERE environment_id = CAST($1 AS uuid) AND user_id = $2
    RETURNING id
),
anonymous_moved AS (
    UPDATE events SET user_id = $3
    WHERE environment_id = CAST($1 AS uuid) AND anonymous_id = $2 AND user_id IS NULL
    RETURNING id
),
events_moved AS (
    SELECT id, $2 AS prior FROM named_moved
    UNION ALL
    SELECT id, CAST(NULL AS text) FROM anonymous_moved
),
folded AS (
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
    RETURNING 1
),
memberships_copied AS (
    INSERT INTO memberships (environment_id, user_id, group_id, created_at)
    SELECT environment_id, $3, group_id, created_at FROM memberships
    WHERE environment_id = CAST($1 AS uuid) AND user_id = $2
    ORDER BY group_id
    ON CONFLICT DO NOTHING
    RETURNING 1
),
memberships_deleted AS (
    DELETE FROM memberships WHERE environment_id = CAST($1 AS uuid) AND user_id = $2
    RETURNING 1
),
user_deleted AS (
    DELETE FROM users WHERE environment_id = CAST($1 AS uuid) AND user_id = $2 RETURNING 1
),
logged AS (
    INSERT INTO identity_log (environment_id, kind, from_id, user_id, message_id, rule, at,
                              events_moved, traits_moved, memberships_moved, undo)
    SELECT CAST($1 AS uuid), 'merge', $2, $3, $4, $5, $6,
           (SELECT count(*) FROM events_moved), $7, (SELECT count(*) FROM memberships_deleted),
           CAST($8 AS jsonb)
    RETURNING id
),
recorded AS (
    INSERT INTO identity_moves (environment_id, log_id, event_id, anonymous_id, prior_user_id)
    SELECT CAST($1 AS uuid), (SELECT id FROM logged), id, CAST(NULL AS text), prior
    FROM events_moved
    UNION ALL
    SELECT CAST($1 AS uuid), (SELECT id FROM logged), CAST(NULL AS bigint), anonymous_id, $2
    FROM ids_moved
    RETURNING 1
)
SELECT (SELECT id FROM logged) AS log_id
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


def _folded(user: dict[str, Any] | None, previous: dict[str, Any]) -> dict[str, Any]:
    """The user's traits and their times once `previous` is folded in, as `merge_traits` and
    `merge_trait_times` fold them: per key, the newer message wins, a tie to the incoming."""
    traits = dict((user or {}).get("traits") or {})
    times = dict((user or {}).get("trait_times") or {})
    incoming_times = previous.get("trait_times") or {}
    for key, value in (previous.get("traits") or {}).items():
        if times.get(key, -math.inf) <= incoming_times.get(key, math.inf):
            traits[key] = value
    for key, time in incoming_times.items():
        if times.get(key, -math.inf) <= time:
            times[key] = time
    return {"traits": traits, "trait_times": times}


def _traits_set(before: dict[str, Any] | None, after: dict[str, Any]) -> dict[str, Any]:
    """The keys whose value or time the merge changes on the user, with both sides."""
    old_traits = (before or {}).get("traits") or {}
    old_times = (before or {}).get("trait_times") or {}
    changed = {}
    for key, time in after["trait_times"].items():
        value = after["traits"].get(key)
        if old_times.get(key) == time and old_traits.get(key) == value:
            continue
        was = [old_traits.get(key), old_times[key]] if key in old_times else None
        changed[key] = {"before": was, "after": [value, time]}
    return changed


def _seen(user: dict[str, Any] | None, previous: dict[str, Any]) -> dict[str, Any]:
    """The user's first and last seen times before the merge and after (least and greatest)."""
    before = {k: (user or {}).get(k) for k in ("first_seen_at", "last_seen_at")}
    after = {}
    for key, pick in (("first_seen_at", min), ("last_seen_at", max)):
        known = [datetime.fromisoformat(t) for t in (before[key], previous.get(key)) if t]
        after[key] = pick(known).isoformat() if known else None
    return {"before": before, "after": after}


def undo_of(sides: Mapping[str, Any], asked: Asked) -> Undo:
    """What the merge will change that no row of its own records, from SIDES' snapshot."""
    profiles = orjson.loads(sides["profiles"])
    previous, user = profiles.get(asked.from_id), profiles.get(asked.user_id)
    memberships = orjson.loads(sides["memberships"])
    undo = Undo(
        previous=previous,
        memberships=[[group, created] for group, created, _ in memberships],
        memberships_added=[group for group, _, held in memberships if not held],
        linked_previous=sides["linked_to"] is None,
    )
    if previous is not None:
        undo.traits = _traits_set(user, _folded(user, previous))
        undo.seen = _seen(user, previous)
    return undo


async def merge(
    pg: asyncpg.Connection, env: uuid.UUID, asked: Asked, rule: str, sides: Mapping[str, Any]
) -> None:
    """Fold `asked.from_id` (an alias's previousId) into `asked.user_id`: events, anonymous
    ids, traits and memberships, logged under `rule`, every move recorded for an unmerge.
    `sides` is what identity.sides read, in this transaction."""
    undo = undo_of(sides, asked)
    traits = len((undo.previous or {}).get("traits") or {})
    ids = (asked.from_id, asked.user_id)
    await pg.execute(MERGE, env, *ids, asked.message_id, rule, asked.at, traits, undo.json())
