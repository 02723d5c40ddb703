"""Set-based SQL for inbound messages: a handful of statements per transaction.

Rows travel as one JSON parameter unpacked by `jsonb_to_recordset`, so a batch of 500
messages costs the same number of round trips as one. Upserts are ordered by key so that
concurrent batches lock rows in the same order and cannot deadlock each other.

These run on the driver's own connection (`store.db.driver_transaction`): the same few
statements run thousands of times a second, and the driver caches their prepared forms.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from integration.inbound.digests import InstallKey

# The class of the advisory locks on anonymous ids (an arbitrary constant: "anon"), and of the
# one on an environment's writers of anonymous ids ("envw").
ANONYMOUS_ID_LOCKS = 0x616E6F6E
ENVIRONMENT_LOCKS = 0x656E7677


def _json(rows: Any) -> str:
    return orjson.dumps(rows).decode()


# A message whose messageId an erasure removed is not stored again: Segment redelivers a batch
# whose answer it lost, and its copies of an erased person's messages must stay duplicates
# (issue #19.2). The check is one index probe per message, and only in an environment that has
# erased something (the first, uncorrelated EXISTS is computed once per statement); the digest
# is an HMAC under the install's key, under the previous key too during a SECRET_KEY rotation.
INSERT_EVENTS = """
INSERT INTO events (environment_id, message_id, type, name, user_id, anonymous_id, group_id,
                    properties, traits, context, extra, timestamp, sent_at, received_at,
                    mapping_error, anonymous_only)
SELECT CAST($1 AS uuid), r.message_id, r.type, r.name,
       coalesce(r.user_id, (SELECT a.user_id FROM anonymous_ids a
                            WHERE a.environment_id = CAST($1 AS uuid)
                              AND a.anonymous_id = r.anonymous_id)),
       r.anonymous_id, r.group_id, r.properties, r.traits, r.context, r.extra,
       r.timestamp, r.sent_at, r.received_at, r.mapping_error, r.user_id IS NULL
FROM jsonb_to_recordset(CAST($2 AS jsonb)) AS r(
    message_id text, type text, name text, user_id text, anonymous_id text, group_id text,
    properties jsonb, traits jsonb, context jsonb, extra jsonb,
    timestamp timestamptz, sent_at timestamptz, received_at timestamptz, mapping_error text)
WHERE NOT EXISTS (SELECT 1 FROM erased_messages WHERE environment_id = CAST($1 AS uuid))
   OR NOT EXISTS (
       SELECT 1 FROM erased_messages x
       WHERE x.environment_id = CAST($1 AS uuid)
         AND x.digest IN (keyed_digest($3, $4, r.message_id), keyed_digest($5, $6, r.message_id)))
ON CONFLICT (environment_id, message_id, direction) DO NOTHING
RETURNING message_id, user_id
"""


async def insert_events(
    pg: asyncpg.Connection, env: uuid.UUID, rows: list[dict[str, Any]], key: InstallKey
) -> dict[str, str | None]:
    """Insert events; returns the messageIds that were new (the rest were redeliveries, or
    copies of erased messages), each with the user it was stored under (an anonymous-only
    event of a linked anonymousId gets that user)."""
    records = await pg.fetch(INSERT_EVENTS, env, _json(rows), *key.sql_args())
    return {message_id: user_id for message_id, user_id in records}


# A transaction storing messages of anonymous ids holds a lock on each until commit, taken
# before its first statement. Without it, an anonymous event and the identify linking its
# anonymousId, committed by two writers at once, each miss the other: the event is stored
# without a user (the link is not committed yet) and the link attaches the anonymous events it
# sees (not that one), leaving it with no user for good. One statement per batch, the keys in a
# fixed order (no deadlock between writers; a request with deletes stores its runs one by one,
# each locking its own, and a deadlock there is retried like any, store.db.with_retries); the
# two-key form, a key space of its own (the outbox's round lock uses the one-key form).
#
# Every such writer holds the environment's lock in shared mode first (the condition on `held`
# is evaluated once, before any key is locked): they do not wait for each other, and an unmerge,
# which takes back links that their messages would resolve through, holds it alone
# (`lock_environment`) and waits for the writers under way to commit.
LOCK_ANONYMOUS_IDS = f"""
WITH held AS (SELECT pg_advisory_xact_lock_shared({ENVIRONMENT_LOCKS}, hashtext($1)))
SELECT count(pg_advisory_xact_lock({ANONYMOUS_ID_LOCKS}, k))
FROM (SELECT DISTINCT hashtext($1 || ' ' || a) AS k FROM unnest(CAST($2 AS text[])) AS a
      ORDER BY 1) AS keys
WHERE (SELECT count(*) FROM held) = 1
"""

LOCK_ENVIRONMENT = f"SELECT pg_advisory_xact_lock({ENVIRONMENT_LOCKS}, hashtext($1))"


async def lock_anonymous_ids(
    pg: asyncpg.Connection, env: uuid.UUID, anonymous_ids: set[str]
) -> None:
    """Hold these anonymous ids of the environment until the transaction ends."""
    if anonymous_ids:
        await pg.execute(LOCK_ANONYMOUS_IDS, str(env), sorted(anonymous_ids))


async def lock_environment(pg: asyncpg.Connection, env: uuid.UUID) -> None:
    """Hold off the environment's writers of anonymous ids until the transaction ends."""
    await pg.execute(LOCK_ENVIRONMENT, str(env))


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


# Everything new messages cause but links, in one statement (one round trip): profiles
# upserted, and memberships. Postgres runs every data-modifying CTE exactly once whether or not
# the final SELECT reads it; the order of the CTEs is also the order rows get locked in, the
# same for every request. The users' rows stay locked until commit: links (identity.py) count
# on it.
APPLY_EFFECTS = f"""
WITH users_upserted AS ({_upsert_profiles("users", "user_id", 2)}),
companies_upserted AS ({_upsert_profiles("companies", "group_id", 3)}),
memberships_added AS (
    INSERT INTO memberships (environment_id, user_id, group_id)
    SELECT CAST($1 AS uuid), r.user_id, r.group_id
    FROM jsonb_to_recordset(CAST($4 AS jsonb)) AS r(user_id text, group_id text)
    ORDER BY r.user_id, r.group_id
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM users_upserted) AS users,
       (SELECT count(*) FROM companies_upserted) AS companies,
       (SELECT count(*) FROM memberships_added) AS memberships
"""


async def apply_effects(
    pg: asyncpg.Connection,
    env: uuid.UUID,
    *,
    users: list[dict[str, Any]],
    companies: list[dict[str, Any]],
    memberships: set[tuple[str, str]],
) -> None:
    if not (users or companies or memberships):
        return
    await pg.execute(
        APPLY_EFFECTS,
        env,
        _json(users),
        _json(companies),
        _json([{"user_id": u, "group_id": g} for u, g in sorted(memberships)]),
    )


# Erasure of one person (a GDPR deletion), in one statement (counted per ERASED_TABLES; the
# rows of the merge log and of the conflicts go too, uncounted): every data-modifying CTE sees
# the snapshot from before the statement, so `devices` still lists the anonymous ids that
# `anonymous_ids_deleted` removes. Events of those devices go only if no other person is named on
# them (two people can share a browser). Outbound messages go in every status: a pending one would
# otherwise still carry their traits to Segment, a delivered one keeps them here. The messageIds
# of the removed events stay as keyed digests (`erased_messages`), so that no redelivery brings
# them back. Their delivery attempts go with the outbox rows (a cascading foreign key), and a
# replay filtered by their userId keeps its record with the id redacted. Messages a tracking plan
# quarantined go by the same ids as the outbox's, and an inbound one is remembered like an event.
ERASE = """
WITH devices AS (
    SELECT anonymous_id FROM anonymous_ids
    WHERE environment_id = CAST($1 AS uuid) AND user_id = $2
),
events_deleted AS (
    DELETE FROM events
    WHERE environment_id = CAST($1 AS uuid)
      AND (user_id = $2 OR (user_id IS NULL AND anonymous_id IN (SELECT anonymous_id FROM devices)))
    RETURNING message_id
),
quarantine_deleted AS (
    DELETE FROM quarantine
    WHERE environment_id = CAST($1 AS uuid)
      AND ((message ? 'userId' AND message ->> 'userId' = $2)
           OR (message ? 'anonymousId'
               AND message ->> 'anonymousId' IN (SELECT anonymous_id FROM devices)
               AND coalesce(message ->> 'userId', '') = ''))
    RETURNING message_id, direction
),
remembered AS (
    INSERT INTO erased_messages (environment_id, digest)
    SELECT DISTINCT CAST($1 AS uuid), keyed_digest($3, $4, message_id)
    FROM (SELECT message_id FROM events_deleted
          UNION SELECT message_id FROM quarantine_deleted WHERE direction = 'inbound') AS gone
    ON CONFLICT DO NOTHING
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
),
-- The merge log and the conflicts keep nothing of the person: no row naming them or one of
-- their devices, on either side.
identity_log_deleted AS (
    DELETE FROM identity_log
    WHERE environment_id = CAST($1 AS uuid)
      AND (user_id = $2 OR from_id = $2 OR from_id IN (SELECT anonymous_id FROM devices))
    RETURNING 1
),
identity_conflicts_deleted AS (
    DELETE FROM identity_conflicts
    WHERE environment_id = CAST($1 AS uuid)
      AND (user_id = $2 OR from_id = $2 OR existing_user_id = $2
           OR from_id IN (SELECT anonymous_id FROM devices))
    RETURNING 1
),
replays_redacted AS (
    UPDATE replays SET filter = jsonb_set(filter, '{user_id}', '"(erased)"')
    WHERE environment_id = CAST($1 AS uuid) AND filter ->> 'user_id' = $2
    RETURNING 1
)
SELECT (SELECT count(*) FROM events_deleted) AS events,
       (SELECT count(*) FROM memberships_deleted) AS memberships,
       (SELECT count(*) FROM anonymous_ids_deleted) AS anonymous_ids,
       (SELECT count(*) FROM users_deleted) AS users,
       (SELECT count(*) FROM outbox_deleted) AS outbox,
       (SELECT count(*) FROM quarantine_deleted) AS quarantine,
       (SELECT count(*) FROM remembered) AS remembered,
       (SELECT count(*) FROM identity_log_deleted)
         + (SELECT count(*) FROM identity_conflicts_deleted) AS identity,
       (SELECT coalesce(array_agg(anonymous_id), '{}') FROM devices) AS devices
"""


@dataclass(frozen=True, slots=True)
class Removed:
    counts: dict[str, int]  # rows per table
    devices: list[str]  # the person's anonymous ids (for the live view's rings)
    identity: int = 0  # rows of the merge log and of its conflicts (not among `counts`)


async def erase(pg: asyncpg.Connection, env: uuid.UUID, user_id: str, key: InstallKey) -> Removed:
    """Delete everything held about `user_id` in this environment; rows removed per table."""
    row = await pg.fetchrow(ERASE, env, user_id, *key.sql_args()[:2])
    assert row is not None  # a SELECT of counts always has its one row
    counts = {name: int(row[name]) for name in ERASED_TABLES}
    if row["quarantine"]:
        # Named only when there were some, so that every answer and audit row without any
        # reads as it did before tracking plans existed.
        counts["quarantine"] = int(row["quarantine"])
    return Removed(counts, list(row["devices"]), int(row["identity"]))


ERASED_TABLES = ("events", "memberships", "anonymous_ids", "users", "outbox")

# A Segment delete is claimed by its messageId's digest before it erases: a second copy of the
# same delete waits here for the first to commit, then finds it and erases nothing again. A
# digest under the previous key (during a SECRET_KEY rotation) counts as done too.
CLAIM_DELETE = """
INSERT INTO erased_messages (environment_id, digest)
SELECT CAST($1 AS uuid), keyed_digest($3, $4, $2)
WHERE NOT EXISTS (SELECT 1 FROM erased_messages
                  WHERE environment_id = CAST($1 AS uuid) AND digest = keyed_digest($5, $6, $2))
ON CONFLICT DO NOTHING
RETURNING 1
"""


async def claim_delete(
    pg: asyncpg.Connection, env: uuid.UUID, message_id: str, key: InstallKey
) -> bool:
    """False if this delete (by messageId) was carried out before."""
    return await pg.fetchval(CLAIM_DELETE, env, message_id, *key.sql_args()) is not None


RECORD_DELETION = """
INSERT INTO deletions (environment_id, user_id_hash, message_id, requested_by, removed)
VALUES (CAST($1 AS uuid), $2, $3, $4, CAST($5 AS jsonb))
ON CONFLICT (environment_id, message_id) DO NOTHING
"""


async def record_deletion(
    pg: asyncpg.Connection,
    env: uuid.UUID,
    user_id_hash: str,
    *,
    message_id: str | None,
    requested_by: str,
    removed: dict[str, int],
) -> None:
    """The audit row of an erasure that removed something."""
    await pg.execute(RECORD_DELETION, env, user_id_hash, message_id, requested_by, _json(removed))


COUNT_UNMATCHED = """
INSERT INTO erasure_counts (environment_id, unmatched, last_unmatched_at)
VALUES (CAST($1 AS uuid), $2, now())
ON CONFLICT (environment_id) DO UPDATE SET
    unmatched = erasure_counts.unmatched + excluded.unmatched,
    last_unmatched_at = excluded.last_unmatched_at
"""


async def count_unmatched(pg: asyncpg.Connection, env: uuid.UUID, deletes: int) -> None:
    """Deletes that found nothing to erase: one counter per environment, not a row each."""
    if deletes:
        await pg.execute(COUNT_UNMATCHED, env, deletes)


# Which of these messageIds the environment has received already: stored (inbound), held in
# quarantine by its tracking plan, or erased since. For a batch signed over its first event
# only, whose first event this tells apart from a new one (service.py, `Inbound._vouch`).
KNOWN = """
SELECT m.id FROM unnest(CAST($2 AS text[])) AS m(id)
WHERE EXISTS (SELECT 1 FROM events e
              WHERE e.environment_id = CAST($1 AS uuid) AND e.message_id = m.id
                AND e.direction = 'inbound')
   OR EXISTS (SELECT 1 FROM quarantine q
              WHERE q.environment_id = CAST($1 AS uuid) AND q.direction = 'inbound'
                AND q.message_id = m.id)
   OR EXISTS (SELECT 1 FROM erased_messages x
              WHERE x.environment_id = CAST($1 AS uuid)
                AND x.digest IN (keyed_digest($3, $4, m.id), keyed_digest($5, $6, m.id)))
"""


async def known(
    pg: asyncpg.Connection, env: uuid.UUID, message_ids: list[str], key: InstallKey
) -> set[str]:
    """The messageIds among `message_ids` that were received before (stored, quarantined or
    erased)."""
    rows = await pg.fetch(KNOWN, env, message_ids, *key.sql_args())
    return {row[0] for row in rows}


# Which of these messageIds were erased: what a tracking plan must not keep in quarantine again
# when Segment redelivers it (inbound/planned.py). Nothing to look for in an environment that
# never erased anything (the first EXISTS, uncorrelated, is computed once).
ERASED = """
SELECT m.id FROM unnest(CAST($2 AS text[])) AS m(id)
WHERE EXISTS (SELECT 1 FROM erased_messages WHERE environment_id = CAST($1 AS uuid))
  AND EXISTS (SELECT 1 FROM erased_messages x
              WHERE x.environment_id = CAST($1 AS uuid)
                AND x.digest IN (keyed_digest($3, $4, m.id), keyed_digest($5, $6, m.id)))
"""


async def erased(
    pg: asyncpg.Connection, env: uuid.UUID, message_ids: list[str], key: InstallKey
) -> set[str]:
    """The messageIds among `message_ids` whose messages were erased."""
    rows = await pg.fetch(ERASED, env, message_ids, *key.sql_args())
    return {row[0] for row in rows}


async def announce(pg: asyncpg.Connection, channel: str, payloads: list[str]) -> None:
    """NOTIFY, delivered when (and only if) the caller's transaction commits."""
    for payload in payloads:
        await pg.execute("SELECT pg_notify($1, $2)", channel, payload)


# Many Segment deletes claimed at once (a run of them in one request), as CLAIM_DELETE claims
# one; returns the messageIds claimed now, the ones not carried out before.
CLAIM_DELETES = """
WITH d AS (
    SELECT DISTINCT m.id, keyed_digest($3, $4, m.id) AS digest
    FROM unnest(CAST($2 AS text[])) AS m(id)
    WHERE NOT EXISTS (SELECT 1 FROM erased_messages x
                      WHERE x.environment_id = CAST($1 AS uuid)
                        AND x.digest = keyed_digest($5, $6, m.id))
),
claimed AS (
    INSERT INTO erased_messages (environment_id, digest)
    SELECT CAST($1 AS uuid), digest FROM d ORDER BY digest
    ON CONFLICT DO NOTHING
    RETURNING digest
)
SELECT d.id FROM d JOIN claimed USING (digest)
"""


async def claim_deletes(
    pg: asyncpg.Connection, env: uuid.UUID, message_ids: list[str], key: InstallKey
) -> set[str]:
    rows = await pg.fetch(CLAIM_DELETES, env, message_ids, *key.sql_args())
    return {row[0] for row in rows}


# Which of these userIds the environment holds anything about (a merged-out id may be named in
# the merge log alone), in one statement: a flood of
# deletes of unknown users costs this, not an erasure each. The outbox has no index by userId,
# so it is read once for the whole list (a hashed subplan), not once per id.
HELD = """
SELECT u.id FROM unnest(CAST($2 AS text[])) AS u(id)
WHERE EXISTS (SELECT 1 FROM users x WHERE x.environment_id = CAST($1 AS uuid) AND x.user_id = u.id)
   OR EXISTS (SELECT 1 FROM anonymous_ids x
              WHERE x.environment_id = CAST($1 AS uuid) AND x.user_id = u.id)
   OR EXISTS (SELECT 1 FROM events x WHERE x.environment_id = CAST($1 AS uuid) AND x.user_id = u.id)
   OR EXISTS (SELECT 1 FROM memberships x
              WHERE x.environment_id = CAST($1 AS uuid) AND x.user_id = u.id)
   OR u.id IN (SELECT payload ->> 'userId' FROM outbox
               WHERE environment_id = CAST($1 AS uuid) AND payload ? 'userId')
   OR EXISTS (SELECT 1 FROM identity_log x
              WHERE x.environment_id = CAST($1 AS uuid) AND u.id IN (x.user_id, x.from_id))
   OR EXISTS (SELECT 1 FROM identity_conflicts x
              WHERE x.environment_id = CAST($1 AS uuid)
                AND u.id IN (x.user_id, x.from_id, x.existing_user_id))
"""


async def held(pg: asyncpg.Connection, env: uuid.UUID, user_ids: list[str]) -> set[str]:
    rows = await pg.fetch(HELD, env, sorted(set(user_ids)))
    return {row[0] for row in rows}
