"""Links and merges, guarded and logged (issue #25): the SQL that ties an anonymousId to a
user and folds one id into another, and records each link or merge it makes (`identity_log`)
and each one it refuses (`identity_conflicts`).

The rules (integration/environments/identity.py holds an environment's settings):
- an anonymousId is linked to the first user a message names with it; a later message naming
  another user leaves that link and is recorded as a conflict (`linked_elsewhere`);
- a user gets no new anonymousId past the environment's limit (`anonymous_id_limit`);
- an alias folds an id without a profile of its own (an anonymousId, or a userId that never
  had traits or events) into the user; an alias of one identified user into another is a
  conflict (`identified_merge`), applied only where the environment allows such merges.

Only messages new to the store get here (ingest.py), so a redelivery records nothing twice.
A merge records what it moves (merges.py), so that an operator can take it back (unmerge.py).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from integration.environments.identity import IdentityRules
from integration.inbound import merges


@dataclass(frozen=True, slots=True)
class Asked:
    """A link or merge a message asked for."""

    from_id: str  # the anonymousId, or the alias's previousId
    user_id: str
    message_id: str
    at: datetime  # the message's timestamp

    def row(self) -> dict[str, Any]:
        return {
            "from_id": self.from_id,
            "user_id": self.user_id,
            "message_id": self.message_id,
            "at": self.at.isoformat(),
        }


# One statement for a batch's links. Two writers never link one anonymousId at once: each holds
# its batch's anonymous ids from before its first statement (repository.lock_anonymous_ids), so
# what this statement reads of them is what stands. It runs after the batch's users are upserted
# (APPLY_EFFECTS), which locks their rows until commit: a concurrent writer linking other ids to
# the same user waits for this transaction, and this statement, begun after that wait, counts
# that writer's links toward the limit. Anonymous events of each id linked now are attached to
# its user, with the memberships their companies give.
LINK = """
WITH requests AS (
    SELECT r.from_id AS anonymous_id, r.user_id, r.message_id, r.at
    FROM jsonb_to_recordset(CAST($2 AS jsonb))
         AS r(from_id text, user_id text, message_id text, at timestamptz)
),
-- One index probe per id asked for (a LATERAL subquery that LIMIT keeps from being flattened
-- into a join), never a scan of the environment's ids: a join, planned from a guess of the CTE's
-- size or for an environment the statistics do not know yet, read all of them.
existing AS (
    SELECT a.anonymous_id, a.user_id
    FROM (SELECT DISTINCT anonymous_id FROM requests) AS q
    CROSS JOIN LATERAL (SELECT x.anonymous_id, x.user_id FROM anonymous_ids x
                        WHERE x.environment_id = CAST($1 AS uuid)
                          AND x.anonymous_id = q.anonymous_id
                        LIMIT 1) AS a
),
firsts AS (
    SELECT DISTINCT ON (q.anonymous_id) q.* FROM requests q
    WHERE q.anonymous_id NOT IN (SELECT anonymous_id FROM existing)
    ORDER BY q.anonymous_id, q.at, q.message_id
),
held AS (
    SELECT u.user_id, a.n
    FROM (SELECT DISTINCT user_id FROM firsts) AS u
    CROSS JOIN LATERAL (SELECT count(*) AS n FROM anonymous_ids x
                        WHERE x.environment_id = CAST($1 AS uuid)
                          AND x.user_id = u.user_id) AS a
),
ranked AS (
    SELECT f.*, coalesce(h.n, 0)
               + row_number() OVER (PARTITION BY f.user_id ORDER BY f.at, f.anonymous_id) AS nth
    FROM firsts f LEFT JOIN held h USING (user_id)
),
linked AS (
    INSERT INTO anonymous_ids (environment_id, anonymous_id, user_id)
    SELECT CAST($1 AS uuid), anonymous_id, user_id FROM ranked WHERE nth <= $3
    ORDER BY anonymous_id
    ON CONFLICT DO NOTHING
    RETURNING anonymous_id
),
made AS (
    SELECT r.anonymous_id, r.user_id, r.message_id, r.at
    FROM linked l JOIN ranked r USING (anonymous_id)
),
attached AS (
    UPDATE events e SET user_id = m.user_id
    FROM made m
    WHERE e.environment_id = CAST($1 AS uuid) AND e.anonymous_id = m.anonymous_id
      AND e.user_id IS NULL
    RETURNING e.anonymous_id, e.user_id, e.group_id
),
memberships_added AS (
    INSERT INTO memberships (environment_id, user_id, group_id)
    SELECT DISTINCT CAST($1 AS uuid), user_id, group_id FROM attached WHERE group_id IS NOT NULL
    ORDER BY 2, 3
    ON CONFLICT DO NOTHING
    RETURNING user_id, group_id
),
-- What moved, counted once per anonymous id (not rescanned for each link made).
events_per_id AS (
    SELECT anonymous_id, count(*) AS n FROM attached GROUP BY anonymous_id
),
-- The memberships made, as one array searched per attached event (an InitPlan): a join of two
-- CTEs, each guessed at one row, would be planned as a nested loop over both.
memberships_per_id AS (
    SELECT a.anonymous_id, count(DISTINCT a.group_id) AS n
    FROM attached a
    WHERE jsonb_build_array(a.user_id, a.group_id)
          = ANY(ARRAY(SELECT jsonb_build_array(user_id, group_id) FROM memberships_added))
    GROUP BY a.anonymous_id
),
logged AS (
    INSERT INTO identity_log (environment_id, kind, from_id, user_id, message_id, rule,
                              events_moved, memberships_moved, at)
    SELECT CAST($1 AS uuid), 'link', m.anonymous_id, m.user_id, m.message_id, 'first_link',
           coalesce(e.n, 0), coalesce(g.n, 0), m.at
    FROM made m
    LEFT JOIN events_per_id e USING (anonymous_id)
    LEFT JOIN memberships_per_id g USING (anonymous_id)
    RETURNING 1
),
owners AS (
    SELECT anonymous_id, user_id FROM existing
    UNION ALL
    SELECT anonymous_id, user_id FROM made
),
refused AS (
    INSERT INTO identity_conflicts (environment_id, kind, from_id, user_id, existing_user_id,
                                    message_id, at)
    SELECT CAST($1 AS uuid), c.kind, c.anonymous_id, c.user_id, c.existing, c.message_id, c.at
    FROM (
        SELECT 'linked_elsewhere' AS kind, q.anonymous_id, q.user_id, o.user_id AS existing,
               q.message_id, q.at
        FROM requests q JOIN owners o USING (anonymous_id)
        WHERE o.user_id <> q.user_id
        UNION ALL
        SELECT 'anonymous_id_limit', r.anonymous_id, r.user_id, NULL, r.message_id, r.at
        FROM ranked r WHERE r.nth > $3
    ) c
    RETURNING 1
)
SELECT (SELECT count(*) FROM logged) AS linked, (SELECT count(*) FROM refused) AS refused
"""


async def link(
    pg: asyncpg.Connection, env: uuid.UUID, asked: list[Asked], rules: IdentityRules
) -> None:
    """Link each anonymousId to the first user asked for it, within the rules; log each link
    made and each refused."""
    if asked:
        rows = orjson.dumps([a.row() for a in asked]).decode()
        await pg.execute(LINK, env, rows, rules.max_anonymous_ids)


# What an alias would merge: whether each side has a profile of its own (traits, or events
# other than aliases under its userId), where the previousId is linked already, how many
# anonymous ids the merged user would hold; and what a merge needs to record beforehand (the two
# profiles, locked, and the previous user's memberships).
SIDES = (
    """
SELECT
  EXISTS (SELECT 1 FROM users WHERE environment_id = CAST($1 AS uuid) AND user_id = $2
                                AND traits <> '{}'::jsonb)
  OR EXISTS (SELECT 1 FROM events WHERE environment_id = CAST($1 AS uuid) AND user_id = $2
                                    AND type <> 'alias') AS previous_identified,
  EXISTS (SELECT 1 FROM users WHERE environment_id = CAST($1 AS uuid) AND user_id = $3
                                AND traits <> '{}'::jsonb)
  OR EXISTS (SELECT 1 FROM events WHERE environment_id = CAST($1 AS uuid) AND user_id = $3
                                    AND type <> 'alias') AS user_identified,
  (SELECT user_id FROM anonymous_ids
   WHERE environment_id = CAST($1 AS uuid) AND anonymous_id = $2) AS linked_to,
  (SELECT count(*) FROM anonymous_ids
   WHERE environment_id = CAST($1 AS uuid) AND user_id = $2) AS previous_ids,
  (SELECT count(*) FROM anonymous_ids
   WHERE environment_id = CAST($1 AS uuid) AND user_id = $3) AS user_ids,
"""
    + merges.SNAPSHOT_COLUMNS
)

RECORD_CONFLICT = """
INSERT INTO identity_conflicts (environment_id, kind, from_id, user_id, existing_user_id,
                                message_id, at)
VALUES (CAST($1 AS uuid), $2, $3, $4, $5, $6, $7)
"""


def _refusal(sides: asyncpg.Record, asked: Asked, rules: IdentityRules) -> tuple[str, str | None]:
    """Why this alias must not be applied, and the user the previousId stays with; ("", None)
    when it may be."""
    linked_to = sides["linked_to"]
    if linked_to is not None and linked_to != asked.user_id:
        return "linked_elsewhere", linked_to
    both = sides["previous_identified"] and sides["user_identified"]
    if both and not rules.allow_identified_merges:
        return "identified_merge", None
    # The ids the merge would add to the user: the previousId's own, and the previousId.
    added = sides["previous_ids"] + (linked_to is None)
    if added and sides["user_ids"] + added > rules.max_anonymous_ids:
        return "anonymous_id_limit", None
    return "", None


def _rule(sides: asyncpg.Record) -> str:
    """The rule that allowed a merge."""
    if not sides["previous_identified"]:
        return "previous_id_anonymous"
    return "user_new" if not sides["user_identified"] else "identified_merges_allowed"


async def sides(pg: asyncpg.Connection, env: uuid.UUID, asked: Asked) -> asyncpg.Record:
    """What SIDES reads of the alias `asked`, its two profiles locked until commit."""
    found = await pg.fetchrow(SIDES, env, asked.from_id, asked.user_id)
    assert found is not None  # a SELECT without FROM has its one row
    return found


async def merge_alias(
    pg: asyncpg.Connection, env: uuid.UUID, asked: Asked, rules: IdentityRules
) -> None:
    """Fold `asked.from_id` (an alias's previousId) into `asked.user_id`, or record why not."""
    if asked.from_id == asked.user_id:
        return
    found = await sides(pg, env, asked)
    kind, existing = _refusal(found, asked, rules)
    ids = (asked.from_id, asked.user_id)
    if kind:
        await pg.execute(RECORD_CONFLICT, env, kind, *ids, existing, asked.message_id, asked.at)
        return
    await merges.merge(pg, env, asked, _rule(found), found)
