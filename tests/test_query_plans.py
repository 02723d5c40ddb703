"""The statements the product runs over and over, against tables that grow to millions of
rows, are served by an index: Postgres's own plan (EXPLAIN, with sequential scans priced out
so that a small test table cannot hide a missing index) reads no table whole, and reaches the
rows of a table keyed by environment through its environment_id. A statement that names rows
by id alone (the primary keys lead with environment_id since migration 0006) scans them all:
that cost the worker a scan of the outbox for every batch it delivered."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.elements import TextClause

from integration.environments import repository as environments
from integration.inbound import repository as inbound
from integration.inbound import retention
from integration.outbound import outbox
from integration.store.db import driver_connection
from tests.segment_payloads import MakeEnv

ROWS = 20_000  # per environment and table: enough for the planner to weigh its choices

FILL = [
    """INSERT INTO outbox (environment_id, message_id, type, payload, size_bytes, status,
           next_attempt_at, delivered_at)
       SELECT e, 'p-' || g, 'track', '{"userId": "u"}', 15, CASE WHEN g % 2 = 0 THEN 'delivered'
           ELSE 'pending' END, now(), CASE WHEN g % 2 = 0 THEN now() END
       FROM generate_series(1, $2) AS g, unnest($1::uuid[]) AS e""",
    """INSERT INTO events (environment_id, message_id, type, name, timestamp)
       SELECT e, 'm-' || g, 'track', 'Seen', now() - make_interval(mins => g)
       FROM generate_series(1, $2) AS g, unnest($1::uuid[]) AS e""",
    """INSERT INTO deletions (environment_id, user_id_hash, message_id, requested_by, removed)
       SELECT e, md5(g::text), 'd-' || g, 'segment', '{}'
       FROM generate_series(1, $2 / 10) AS g, unnest($1::uuid[]) AS e""",
]


@dataclass(frozen=True)
class Stored:
    """The connection to explain on, and an environment (of two) holding rows in each table."""

    pg: asyncpg.Connection
    env: uuid.UUID


@pytest.fixture
async def stored(engine: AsyncEngine, make_environment: MakeEnv) -> AsyncIterator[Stored]:
    ours, theirs = await make_environment(), await make_environment()
    async with driver_connection(engine) as pg:
        tx = pg.transaction()
        await tx.start()
        try:
            for fill in FILL:
                await pg.execute(fill, [ours.id, theirs.id], ROWS)
            await pg.execute("ANALYZE outbox, events, deletions")
            # Priced out, not forbidden: a plan with no index to use still shows its Seq Scan.
            await pg.execute("SET LOCAL enable_seqscan = off")
            yield Stored(pg, ours.id)
        finally:
            await tx.rollback()


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


async def plan_of(
    pg: asyncpg.Connection, statement: str | TextClause, *args: Any, **named: Any
) -> list[Any]:
    """EXPLAIN's nodes: of a driver statement ($1, $2 ... as `args`), or of a SQLAlchemy text()
    (its :names as `named`)."""
    if isinstance(statement, TextClause):
        args = tuple(named[name] for name in statement._bindparams)
        sql = _positional(statement)
    else:
        sql = statement
    explained = await pg.fetchval("EXPLAIN (FORMAT JSON) " + sql, *args)
    if isinstance(explained, str):  # the pool's connections decode json themselves
        explained = orjson.loads(explained)
    return list(nodes(explained[0]["Plan"]))


def _positional(statement: TextClause) -> str:
    sql = statement.text
    for number, name in enumerate(dict.fromkeys(statement._bindparams), start=1):
        sql = sql.replace(f"CAST(:{name} AS", f"CAST(${number} AS").replace(
            f":{name}", f"${number}"
        )
    return sql


async def assert_indexed(
    pg: asyncpg.Connection, plan: list[dict[str, Any]], table: str, *, by: tuple[str, ...]
) -> None:
    """`table` is read through its indexes only, each with conditions on every column of `by`
    (a condition left to the Filter means reading every row the others match)."""
    indexes = set(
        await pg.fetchval("SELECT array_agg(indexname) FROM pg_indexes WHERE tablename = $1", table)
    )
    scans = [n for n in plan if n.get("Relation Name") == table or n.get("Index Name") in indexes]
    assert scans, f"the plan does not read {table}: {plan}"
    for node in scans:
        assert node["Node Type"] != "Seq Scan", f"{table} is read whole: {plan}"
        if "Index Name" in node:
            condition = node.get("Index Cond", "")
            for column in by:
                assert re.search(rf"\b{column}\b", condition), f"{column} not in {node}"


async def test_the_workers_outbox_statements_reach_rows_by_their_key(stored: Stored) -> None:
    pg, env = stored.pg, str(stored.env)
    ids = [
        int(i)
        for i in await pg.fetchval(
            "SELECT array_agg(id) FROM (SELECT id FROM outbox WHERE environment_id = $1"
            " LIMIT 100) AS s",
            stored.env,
        )
    ]
    claim = await plan_of(pg, outbox.CLAIM, env=env, limit=100)
    await assert_indexed(pg, claim, "outbox", by=("environment_id", "next_attempt_at"))
    answer = {"env": env, "ids": ids, "status": 200, "body": "{}"}
    key = ("environment_id", "id")
    await assert_indexed(pg, await plan_of(pg, outbox.MARK_DELIVERED, **answer), "outbox", by=key)
    dead = await plan_of(pg, outbox.MARK_DEAD, **answer, error="refused")
    await assert_indexed(pg, dead, "outbox", by=key)
    retry = {**answer, "error": "failed", "delay": 1.5, "max_age": 86400.0}
    await assert_indexed(pg, await plan_of(pg, outbox.MARK_RETRY, **retry), "outbox", by=key)


async def test_housekeeping_deletes_in_bounded_index_ordered_batches(stored: Stored) -> None:
    pg = stored.pg
    purge = await plan_of(pg, outbox.PURGE_DELIVERED, days=0, limit=5000)
    await assert_indexed(pg, purge, "outbox", by=())
    assert any(n.get("Index Name") == "ix_outbox_delivered_at" for n in purge), purge
    expire = await plan_of(pg, retention.EXPIRE, env=stored.env, days=0, limit=5000)
    await assert_indexed(pg, expire, "events", by=("environment_id",))


async def test_key_lookups_and_erasure_records_use_their_indexes(stored: Stored) -> None:
    pg = stored.pg
    for lookup in (environments.FIND_BY_WEBHOOK_KEY, environments.FIND_BY_SOURCE_WRITE_KEY):
        await assert_indexed(pg, await plan_of(pg, lookup, "0" * 64), "environments", by=())
    record = await plan_of(pg, inbound.RECORD_DELETION, stored.env, 1, "{}")
    await assert_indexed(pg, record, "deletions", by=("environment_id", "id"))
