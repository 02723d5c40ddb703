"""Set-based SQL for inbound messages: a handful of statements per transaction.

Rows travel as one JSON parameter unpacked by `jsonb_to_recordset`, so a batch of 500
messages costs the same number of round trips as one. Upserts are ordered by key so that
concurrent batches lock rows in the same order and cannot deadlock each other.

These run on the driver's own connection (`store.db.driver_transaction`): the same few
statements run thousands of times a second, and the driver caches their prepared forms.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import asyncpg
import orjson


def _json(rows: Any) -> str:
    return orjson.dumps(rows).decode()


INSERT_EVENTS = """
INSERT INTO events (environment_id, message_id, type, name, user_id, anonymous_id, group_id,
                    properties, traits, context, extra, timestamp, sent_at, received_at)
SELECT CAST($1 AS uuid), r.message_id, r.type, r.name,
       coalesce(r.user_id, (SELECT a.user_id FROM anonymous_ids a
                            WHERE a.environment_id = CAST($1 AS uuid)
                              AND a.anonymous_id = r.anonymous_id)),
       r.anonymous_id, r.group_id, r.properties, r.traits, r.context, r.extra,
       r.timestamp, r.sent_at, r.received_at
FROM jsonb_to_recordset(CAST($2 AS jsonb)) AS r(
    message_id text, type text, name text, user_id text, anonymous_id text, group_id text,
    properties jsonb, traits jsonb, context jsonb, extra jsonb,
    timestamp timestamptz, sent_at timestamptz, received_at timestamptz)
ON CONFLICT (environment_id, message_id, direction) DO NOTHING
RETURNING message_id, user_id
"""


async def insert_events(
    pg: asyncpg.Connection, env: uuid.UUID, rows: list[dict[str, Any]]
) -> dict[str, str | None]:
    """Insert events; returns the messageIds that were new (the rest were redeliveries), each
    with the user it was stored under (an anonymous-only event of a linked anonymousId gets
    that user)."""
    records = await pg.fetch(INSERT_EVENTS, env, _json(rows))
    return {message_id: user_id for message_id, user_id in records}


def _upsert_profiles(table: str, key: str, param: int) -> str:
    # Only touch an existing row when something changes: a stream of track calls from one
    # user must not rewrite that user's row on every event. Most messages carry no traits:
    # they skip the merge functions (SQL functions with an aggregate, which Postgres cannot
    # inline; two calls per row were about half the cost of the upsert).
    return f"""
    INSERT INTO {table} (environment_id, {key}, traits, trait_times, first_seen_at, last_seen_at)
    SELECT CAST($1 AS uuid), r.key, r.traits, r.trait_times, r.first_seen, r.last_seen
    FROM jsonb_to_recordset(CAST(${param} AS jsonb)) AS r(
        key text, traits jsonb, trait_times jsonb, first_seen timestamptz, last_seen timestamptz)
    ORDER BY r.key
    -- excluded.updated_at is the column's default, now(): on Citus the DO UPDATE clause may
    -- call only immutable functions (the default is evaluated on the coordinator).
    ON CONFLICT (environment_id, {key}) DO UPDATE SET
        traits = CASE WHEN excluded.trait_times = '{{}}'::jsonb THEN {table}.traits
                      ELSE merge_traits({table}.traits, {table}.trait_times,
                                        excluded.traits, excluded.trait_times) END,
        trait_times = CASE WHEN excluded.trait_times = '{{}}'::jsonb THEN {table}.trait_times
                           ELSE merge_trait_times({table}.trait_times, excluded.trait_times) END,
        first_seen_at = least({table}.first_seen_at, excluded.first_seen_at),
        last_seen_at = greatest({table}.last_seen_at, excluded.last_seen_at),
        updated_at = excluded.updated_at
    WHERE excluded.trait_times <> '{{}}'::jsonb
       OR {table}.last_seen_at IS NULL OR excluded.last_seen_at > {table}.last_seen_at
       OR excluded.first_seen_at < {table}.first_seen_at
    RETURNING 1"""


# Everything new messages cause, in one statement (one round trip): profiles upserted, anonymous
# ids linked (the first link wins), the anonymous events of newly linked ids attached to their
# user, and memberships from the batch and from those attached events. Postgres runs every
# data-modifying CTE exactly once whether or not the final SELECT reads it; the order of the
# CTEs is also the order rows get locked in, the same for every request.
APPLY_EFFECTS = f"""
WITH users_upserted AS ({_upsert_profiles("users", "user_id", 2)}),
companies_upserted AS ({_upsert_profiles("companies", "group_id", 3)}),
linked AS (
    INSERT INTO anonymous_ids (environment_id, anonymous_id, user_id)
    SELECT CAST($1 AS uuid), r.anonymous_id, r.user_id
    FROM jsonb_to_recordset(CAST($4 AS jsonb)) AS r(anonymous_id text, user_id text)
    ORDER BY r.anonymous_id
    ON CONFLICT (environment_id, anonymous_id) DO NOTHING
    RETURNING anonymous_id, user_id
),
attached AS (
    UPDATE events e SET user_id = l.user_id
    FROM linked l
    WHERE e.environment_id = CAST($1 AS uuid) AND e.anonymous_id = l.anonymous_id
      AND e.user_id IS NULL
    RETURNING e.user_id, e.group_id
),
memberships_added AS (
    INSERT INTO memberships (environment_id, user_id, group_id)
    SELECT CAST($1 AS uuid), m.user_id, m.group_id FROM (
        SELECT r.user_id, r.group_id
        FROM jsonb_to_recordset(CAST($5 AS jsonb)) AS r(user_id text, group_id text)
        UNION
        SELECT user_id, group_id FROM attached WHERE group_id IS NOT NULL
    ) AS m
    ORDER BY m.user_id, m.group_id
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM users_upserted) AS users,
       (SELECT count(*) FROM companies_upserted) AS companies,
       (SELECT count(*) FROM attached) AS attached,
       (SELECT count(*) FROM memberships_added) AS memberships
"""


async def apply_effects(
    pg: asyncpg.Connection,
    env: uuid.UUID,
    *,
    users: list[dict[str, Any]],
    companies: list[dict[str, Any]],
    links: dict[str, str],
    memberships: set[tuple[str, str]],
) -> None:
    if not (users or companies or links or memberships):
        return
    await pg.execute(
        APPLY_EFFECTS,
        env,
        _json(users),
        _json(companies),
        _json([{"anonymous_id": a, "user_id": u} for a, u in links.items()]),
        _json([{"user_id": u, "group_id": g} for u, g in sorted(memberships)]),
    )


ALIAS_STATEMENTS = [
    # previousId may be an anonymousId or an earlier userId: both now resolve to userId.
    """INSERT INTO anonymous_ids (environment_id, anonymous_id, user_id)
       VALUES (CAST($1 AS uuid), $2, $3) ON CONFLICT DO NOTHING""",
    """UPDATE anonymous_ids SET user_id = $3, updated_at = now()
       WHERE environment_id = CAST($1 AS uuid) AND user_id = $2""",
    """UPDATE events SET user_id = $3
       WHERE environment_id = CAST($1 AS uuid)
         AND (user_id = $2 OR (anonymous_id = $2 AND user_id IS NULL))""",
    # The earlier user's traits fold into the user, by the same newest-wins rule.
    """INSERT INTO users (environment_id, user_id, traits, trait_times, first_seen_at, last_seen_at)
       SELECT environment_id, $3, traits, trait_times, first_seen_at, last_seen_at
       FROM users WHERE environment_id = CAST($1 AS uuid) AND user_id = $2
       ON CONFLICT (environment_id, user_id) DO UPDATE SET
         traits = merge_traits(users.traits, users.trait_times,
                               excluded.traits, excluded.trait_times),
         trait_times = merge_trait_times(users.trait_times, excluded.trait_times),
         first_seen_at = least(users.first_seen_at, excluded.first_seen_at),
         last_seen_at = greatest(users.last_seen_at, excluded.last_seen_at),
         updated_at = excluded.updated_at""",
    """INSERT INTO memberships (environment_id, user_id, group_id, created_at)
       SELECT environment_id, $3, group_id, created_at FROM memberships
       WHERE environment_id = CAST($1 AS uuid) AND user_id = $2
       ON CONFLICT DO NOTHING""",
    """DELETE FROM memberships WHERE environment_id = CAST($1 AS uuid) AND user_id = $2""",
    """DELETE FROM users WHERE environment_id = CAST($1 AS uuid) AND user_id = $2""",
]
# The driver wants exactly as many arguments as the statement has placeholders ($1..$n).
ALIAS = [(s, max(int(n) for n in re.findall(r"\$(\d)", s))) for s in ALIAS_STATEMENTS]


async def merge_alias(
    pg: asyncpg.Connection, env: uuid.UUID, previous_id: str, user_id: str
) -> None:
    if previous_id == user_id:
        return
    args = (env, previous_id, user_id)
    for statement, count in ALIAS:
        await pg.execute(statement, *args[:count])


# Erasure of one person (a GDPR deletion), in one statement: every data-modifying CTE sees the
# snapshot from before the statement, so `devices` still lists the anonymous ids that
# `anonymous_ids_deleted` removes. Events of those devices go only if no other person is named on
# them (two people can share a browser). Outbound messages go in every status: a pending one would
# otherwise still carry their traits to Segment, a delivered one keeps them here.
ERASE = """
WITH devices AS (
    SELECT anonymous_id FROM anonymous_ids
    WHERE environment_id = CAST($1 AS uuid) AND user_id = $2
),
events_deleted AS (
    DELETE FROM events
    WHERE environment_id = CAST($1 AS uuid)
      AND (user_id = $2 OR (user_id IS NULL AND anonymous_id IN (SELECT anonymous_id FROM devices)))
    RETURNING 1
),
memberships_deleted AS (
    DELETE FROM memberships WHERE environment_id = CAST($1 AS uuid) AND user_id = $2 RETURNING 1
),
outbox_deleted AS (
    DELETE FROM outbox
    WHERE environment_id = CAST($1 AS uuid)
      AND ((payload ? 'userId' AND payload ->> 'userId' = $2)
           OR (payload ? 'anonymousId'
               AND payload ->> 'anonymousId' IN (SELECT anonymous_id FROM devices)
               AND coalesce(payload ->> 'userId', '') = ''))
    RETURNING 1
),
anonymous_ids_deleted AS (
    DELETE FROM anonymous_ids WHERE environment_id = CAST($1 AS uuid) AND user_id = $2
    RETURNING 1
),
users_deleted AS (
    DELETE FROM users WHERE environment_id = CAST($1 AS uuid) AND user_id = $2 RETURNING 1
)
SELECT (SELECT count(*) FROM events_deleted) AS events,
       (SELECT count(*) FROM memberships_deleted) AS memberships,
       (SELECT count(*) FROM anonymous_ids_deleted) AS anonymous_ids,
       (SELECT count(*) FROM users_deleted) AS users,
       (SELECT count(*) FROM outbox_deleted) AS outbox
"""


async def erase(pg: asyncpg.Connection, env: uuid.UUID, user_id: str) -> dict[str, int]:
    """Delete everything held about `user_id` in this environment; rows removed per table."""
    row = await pg.fetchrow(ERASE, env, user_id)
    assert row is not None  # a SELECT of counts always has its one row
    return {name: int(row[name]) for name in row.keys()}  # noqa: SIM118 - a Record, not a dict


# The audit row is written before the erasure: a second copy of the same Segment delete (same
# messageId) waits here for the first to commit, then finds it and erases nothing again.
CLAIM_DELETION = """
INSERT INTO deletions (environment_id, user_id_hash, message_id, requested_by, removed)
VALUES (CAST($1 AS uuid), $2, $3, $4, '{}'::jsonb)
ON CONFLICT (environment_id, message_id) DO NOTHING
RETURNING id
"""

RECORD_DELETION = """
UPDATE deletions SET removed = CAST($3 AS jsonb) WHERE environment_id = CAST($1 AS uuid) AND id = $2
"""


async def claim_deletion(
    pg: asyncpg.Connection,
    env: uuid.UUID,
    user_id_hash: str,
    *,
    message_id: str | None,
    requested_by: str,
) -> int | None:
    """The new audit row's id, or None if this delete (by messageId) was already carried out."""
    row_id: int | None = await pg.fetchval(
        CLAIM_DELETION, env, user_id_hash, message_id, requested_by
    )
    return row_id


async def record_deletion(
    pg: asyncpg.Connection, env: uuid.UUID, deletion_id: int, removed: dict[str, int]
) -> None:
    await pg.execute(RECORD_DELETION, env, deletion_id, _json(removed))
