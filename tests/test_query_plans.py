"""The statements the product runs over and over, against tables that grow to millions of
rows, are served by an index: Postgres's own plan (EXPLAIN, with sequential scans priced out
so that a small test table cannot hide a missing index) reads no table whole, and reaches the
rows of a table keyed by environment through its environment_id. A statement that names rows
by id alone (the primary keys lead with environment_id since migration 0006) scans them all:
that cost the worker a scan of the outbox for every batch it delivered."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.sql.elements import TextClause

from integration.environments import repository as environments
from integration.inbound import ledger, queries, retention
from integration.inbound import repository as inbound
from integration.inbound.digests import InstallKey
from integration.outbound import outbox
from integration.store import activity, citus
from tests.segment_payloads import MakeEnv

PADS = InstallKey(b"k" * 32).sql_args()
ROWS = 20_000  # per environment and table: enough for the planner to weigh its choices

FILL = [
    """INSERT INTO outbox (environment_id, message_id, type, payload, size_bytes, status,
           next_attempt_at, delivered_at, identity_key)
       SELECT e, 'p-' || g, 'track', '{"userId": "u"}', 15, CASE WHEN g % 2 = 0 THEN 'delivered'
           ELSE 'pending' END, now(), CASE WHEN g % 2 = 0 THEN now() END, 'u-' || g % 500
       FROM generate_series(1, $2) AS g, unnest($1::uuid[]) AS e""",
    """INSERT INTO events (environment_id, message_id, type, name, user_id, anonymous_id,
                          group_id, timestamp)
       SELECT e, 'm-' || g, 'track', 'Seen', 'u-' || g % 500, 'a-' || g % 700, 'c-' || g % 500,
              now() - make_interval(mins => g)
       FROM generate_series(1, $2) AS g, unnest($1::uuid[]) AS e""",
    """INSERT INTO deletions (environment_id, user_id_hash, message_id, requested_by, removed)
       SELECT e, md5(g::text), 'd-' || g, 'segment', '{}'
       FROM generate_series(1, $2 / 10) AS g, unnest($1::uuid[]) AS e""",
    """INSERT INTO erased_messages (environment_id, digest)
       SELECT e, sha256(convert_to(g::text, 'UTF8'))
       FROM generate_series(1, $2 / 10) AS g, unnest($1::uuid[]) AS e""",
]


@dataclass(frozen=True)
class Stored:
    """The connection to explain on (the driver's, and SQLAlchemy's around it, in the one
    transaction that holds the rows), and an environment (of two) holding rows in each table."""

    pg: asyncpg.Connection
    conn: AsyncConnection
    env: uuid.UUID


@pytest.fixture
async def stored(engine: AsyncEngine, make_environment: MakeEnv) -> AsyncIterator[Stored]:
    async with engine.connect() as conn:
        if await conn.run_sync(citus.is_citus):
            pytest.skip(
                "on Citus the coordinator's EXPLAIN shows the routing, not the shard's own plan:"
                " tests/test_citus.py checks that each statement goes to one shard"
            )
    ours, theirs = await make_environment(), await make_environment()
    async with engine.connect() as conn:
        pg = (await conn.get_raw_connection()).driver_connection
        assert pg is not None
        await conn.begin()
        await conn.execute(text("SELECT 1"))  # SQLAlchemy's adapter opens the transaction now
        try:
            for fill in FILL:
                await pg.execute(fill, [ours.id, theirs.id], ROWS)
            await pg.execute("ANALYZE outbox, events, deletions")
            # Priced out, not forbidden: a plan with no index to use still shows its Seq Scan.
            await pg.execute("SET LOCAL enable_seqscan = off")
            yield Stored(pg, conn, ours.id)
        finally:
            await conn.rollback()


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


async def index_names(pg: asyncpg.Connection, table: str) -> set[str]:
    return set(
        await pg.fetchval("SELECT array_agg(indexname) FROM pg_indexes WHERE tablename = $1", table)
    )


async def assert_indexed(
    pg: asyncpg.Connection, plan: list[dict[str, Any]], table: str, *, by: tuple[str, ...]
) -> None:
    """`table` is read through its indexes only, each with conditions on every column of `by`
    (a condition left to the Filter means reading every row the others match)."""
    indexes = await index_names(pg, table)
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
    await assert_indexed(pg, claim, "outbox", by=("environment_id",))
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
    expire = await plan_of(pg, retention.DELETE_EXPIRED, env=stored.env, days=0, limit=5000)
    await assert_indexed(pg, expire, "events", by=("environment_id",))


async def test_key_lookups_and_erasure_records_use_their_indexes(stored: Stored) -> None:
    pg = stored.pg
    for lookup in (environments.FIND_BY_WEBHOOK_KEY, environments.FIND_BY_SOURCE_WRITE_KEY):
        await assert_indexed(pg, await plan_of(pg, lookup, "0" * 64), "environments", by=())
    # A delete's claim, and the insert's check for erased messages (#19.2): one probe each.
    claim = await plan_of(pg, inbound.CLAIM_DELETE, stored.env, "d-1", *PADS)
    await assert_indexed(pg, claim, "erased_messages", by=("environment_id", "digest"))
    rows = '[{"message_id": "m-1", "type": "track", "user_id": "u"}]'
    insert = await plan_of(pg, inbound.INSERT_EVENTS, stored.env, rows, *PADS)
    await assert_indexed(pg, insert, "erased_messages", by=("environment_id",))
    # A run of deletes: claimed together, and who is held decided in one statement (#20.8).
    claims = await plan_of(pg, inbound.CLAIM_DELETES, stored.env, ["d-1", "d-2"], *PADS)
    await assert_indexed(pg, claims, "erased_messages", by=("environment_id", "digest"))
    held = await plan_of(pg, inbound.HELD, stored.env, ["u-1", "u-2"])
    await assert_indexed(pg, held, "events", by=("environment_id", "user_id"))


async def explained_orm_statements(
    stored: Stored, read: Callable[[AsyncSession], Awaitable[object]]
) -> list[dict[str, Any]]:
    """EXPLAIN's nodes for every statement `read` sends through SQLAlchemy, as it sent them."""
    sent: list[tuple[str, Any]] = []

    def capture(_c: object, _cur: object, statement: str, parameters: Any, *_: object) -> None:
        sent.append((statement, parameters))

    sync_engine = stored.conn.sync_engine
    event.listen(sync_engine, "before_cursor_execute", capture)
    try:
        await read(AsyncSession(bind=stored.conn))
    finally:
        event.remove(sync_engine, "before_cursor_execute", capture)
    return [n for sql, args in sent for n in await plan_of(stored.pg, sql, *args)]


async def test_every_index_on_events_serves_a_statement_the_product_runs(stored: Stored) -> None:
    """Each index costs every stored event a write, so each must be one a query reads by: the
    events list (unfiltered, and by user, device and company), the live view, the lookup by
    messageId (the same unique index deduplicates inserts), retention and erasure."""
    env = stored.env
    newest = {"before": None, "limit": 51}
    reads: list[Callable[[AsyncSession], Awaitable[object]]] = [
        lambda s: queries.list_events(s, env, queries.EventFilters(), **newest),
        lambda s: queries.list_events(s, env, queries.EventFilters(user_id="u-7"), **newest),
        lambda s: queries.list_events(s, env, queries.EventFilters(anonymous_id="a-7"), **newest),
        lambda s: queries.list_events(s, env, queries.EventFilters(company="c-7"), **newest),
        lambda s: queries.arrivals(s, env),
        lambda s: queries.event_id_of(s, env, "m-7"),
    ]
    plans = [await explained_orm_statements(stored, read) for read in reads]
    plans.append(await plan_of(stored.pg, retention.DELETE_EXPIRED, env=env, days=0, limit=5000))
    plans.append(await plan_of(stored.pg, inbound.ERASE, str(env), "u-7", *PADS[:2]))
    for plan in plans:
        await assert_indexed(stored.pg, plan, "events", by=("environment_id",))
    used = {n["Index Name"] for plan in plans for n in plan if "Index Name" in n}
    unused = sorted(await index_names(stored.pg, "events") - used)
    assert not unused, f"indexes on events that no statement reads by: {unused}"


async def test_the_ledger_trace_and_replay_reach_rows_by_environment(stored: Stored) -> None:
    """#23: the ledger reads the few pending and dead rows and the activity counts; a trace
    reads one row and its attempts; a replay's filter and the redelivery count go through
    indexes led by environment_id."""
    pg, env = stored.pg, stored.env
    await pg.execute("ANALYZE activity_counts, delivery_attempts")
    since, until = datetime(1970, 1, 1, tzinfo=UTC), datetime(9999, 1, 1, tzinfo=UTC)
    book = await plan_of(
        pg, outbox.LEDGER, env=env, since=since, until=until, streaming=True, max_bytes=32768
    )
    await assert_indexed(pg, book, "outbox", by=("environment_id",))
    await assert_indexed(pg, book, "activity_counts", by=("environment_id",))
    counts = await plan_of(pg, activity.INBOUND_LEDGER, env=env, since=since, until=until)
    await assert_indexed(pg, counts, "activity_counts", by=("environment_id",))
    ids = [1, 2, 3]
    attempts = await plan_of(
        pg, outbox.RECORD_ATTEMPTS, env=str(env), ids=ids, status=200, error=None
    )
    await assert_indexed(pg, attempts, "outbox", by=("environment_id", "id"))
    again = await plan_of(pg, ledger.REDELIVERED, env, ["m-7"])
    await assert_indexed(pg, again, "events", by=("environment_id", "message_id"))
    reads: list[Callable[[AsyncSession], Awaitable[object]]] = [
        lambda s: outbox.trace(s, env, "p-2"),
        lambda s: outbox.replay_filtered(
            s, env, outbox.ReplayFilter(user_id="u"), dry_run=True, actor="t"
        ),
        lambda s: outbox.replay_filtered(
            s, env, outbox.ReplayFilter(status="delivered", event="x"), dry_run=True, actor="t"
        ),
    ]
    for read in reads:
        plan = await explained_orm_statements(stored, read)
        await assert_indexed(pg, plan, "outbox", by=("environment_id",))
