"""On a Citus cluster (`make test-citus`), `migrate` leaves the schema distributed by
environment_id, every statement the webhook and the events list run touches one shard group,
and the environments' rows spread over the workers. On plain Postgres (`make test`), `migrate`
leaves the schema as it was. Each test skips, saying why, on the other kind of database."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.sql.elements import TextClause

from integration.config import Settings, asyncpg_url
from integration.inbound import identity, ledger, merges, queries, unmerge
from integration.inbound import repository as inbound
from integration.outbound import outbox
from integration.plans import quarantine, violations
from integration.store import citus
from tests.processes import ROOT
from tests.segment_payloads import MakeEnv, identify, new_id, track

PLAIN = "the test database is plain Postgres: `make test-citus` runs this on a Citus cluster"


async def on_citus(engine: AsyncEngine) -> bool:
    async with engine.connect() as conn:
        return await conn.run_sync(citus.is_citus)


@pytest.fixture
async def cluster(engine: AsyncEngine) -> None:
    if not await on_citus(engine):
        pytest.skip(PLAIN)


@pytest.fixture
async def pg(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    async with engine.connect() as conn:
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None
        yield driver


async def layout(pg: asyncpg.Connection) -> list[tuple[Any, ...]]:
    rows = await pg.fetch(
        """SELECT logicalrelid::text, partmethod::text, colocationid,
                  coalesce(column_to_column_name(logicalrelid, partkey), '')
           FROM pg_dist_partition ORDER BY 1"""
    )
    return [tuple(r) for r in rows]


async def test_every_table_of_environment_data_is_distributed_by_environment_id_together(
    cluster: None, pg: asyncpg.Connection
) -> None:
    tables = {name: (method, group, column) for name, method, group, column in await layout(pg)}
    distributed = {name for name, (method, _, _) in tables.items() if method == "h"}
    assert distributed == set(citus.DISTRIBUTED)
    assert {tables[name][2] for name in distributed} == {"environment_id"}
    assert len({tables[name][1] for name in distributed}) == 1  # one colocation group
    references = {name for name, (method, _, _) in tables.items() if method == "n"}
    assert references == set(citus.REFERENCE)
    # The functions the shards' statements call exist on every node.
    distributed_functions = await pg.fetchval(
        """SELECT array_agg(objid::regprocedure::text ORDER BY 1) FROM pg_dist_object
           WHERE classid = 'pg_proc'::regclass"""
    )
    assert {"merge_traits(jsonb,jsonb,jsonb,jsonb)", "count_events_in_on_shard()"} <= set(
        distributed_functions
    )


def _alembic(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["database_url"] = url
    return config


async def test_migrating_again_changes_nothing(
    cluster: None, pg: asyncpg.Connection, settings: Settings
) -> None:
    async def snapshot() -> tuple[Any, ...]:
        triggers = await pg.fetch(
            """SELECT tgrelid::regclass::text, tgname, tgfoid::regproc::text FROM pg_trigger
               WHERE NOT tgisinternal AND tgrelid::regclass::text NOT LIKE 'pg_dist%'
               ORDER BY 1, 2"""
        )
        shards = await pg.fetchval("SELECT count(*) FROM pg_dist_shard")
        return (await layout(pg), [tuple(t) for t in triggers], shards)

    before = await snapshot()
    assert settings.database_url
    config = _alembic(asyncpg_url(settings.database_url))
    # Down to 0007 and up again re-runs 0008 on a database it has already distributed.
    await asyncio.to_thread(command.downgrade, config, "0007")
    await asyncio.to_thread(command.upgrade, config, "head")
    assert await snapshot() == before


async def test_on_plain_postgres_migrate_distributes_nothing(
    engine: AsyncEngine, pg: asyncpg.Connection
) -> None:
    if await on_citus(engine):
        pytest.skip("the test database is a Citus coordinator: the plain case is `make test`")
    assert not await pg.fetchval("SELECT to_regproc('shard_of') IS NOT NULL")
    # Plain Postgres keeps migration 0007's trigger: any change to environments notifies.
    assert (
        await pg.fetchval("SELECT count(*) FROM pg_trigger WHERE tgname = 'environments_changed'")
        == 1
    )


def task_counts(plan: str) -> list[int]:
    return [int(n) for n in re.findall(r"Task Count: (\d+)", plan)]


def literal(value: Any) -> str:
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, bytes):
        return f"'\\x{value.hex()}'::bytea"
    if isinstance(value, list):
        return "ARRAY[" + ", ".join(literal(v) for v in value) + "]"
    return "'" + str(value).replace("'", "''") + "'"


def named(statement: TextClause, **values: Any) -> tuple[str, tuple[Any, ...]]:
    """A text() statement with its :names as $1, $2 ... and their values in that order."""
    sql, names = statement.text, list(dict.fromkeys(statement._bindparams))
    for number, name in enumerate(names, start=1):
        sql = re.sub(rf"(?<!:):{name}\b", f"${number}", sql)
    return sql, tuple(values[name] for name in names)


async def explain(pg: asyncpg.Connection, sql: str, *args: Any) -> str:
    """The plan with the arguments written in (as the product's statements run: with their
    values known; a generic plan of unknown parameters is not one Citus routes)."""
    for number in range(len(args), 0, -1):
        sql = sql.replace(f"${number}", literal(args[number - 1]))
    return "\n".join(row[0] for row in await pg.fetch("EXPLAIN " + sql))


async def test_the_webhooks_statements_and_the_events_list_each_touch_one_shard(
    cluster: None, pg: asyncpg.Connection, engine: AsyncEngine, make_environment: MakeEnv
) -> None:
    env = (await make_environment()).id
    rows = orjson.dumps(
        [{"message_id": "m1", "type": "track", "anonymous_id": "a1", "timestamp": "2026-01-01"}]
    ).decode()
    profiles = '[{"key": "u1", "traits": {"a": 1}, "trait_times": {"a": 1}}]'
    # The install key's padded blocks, as `keyed_digest` takes them (the current key's, then
    # the previous key's).
    key = (b"\x36" * 64, b"\x5c" * 64) * 2
    statements: list[tuple[str, tuple[Any, ...]]] = [
        # With the erased messages' dedup inside it.
        (inbound.INSERT_EVENTS, (env, rows, *key)),
        (
            inbound.APPLY_EFFECTS,
            (
                env,
                profiles,
                profiles,
                '[{"user_id": "u1", "group_id": "g1"}]',
            ),
        ),
        (
            identity.LINK,
            (
                env,
                '[{"from_id": "a1", "user_id": "u1", "message_id": "m1", "at": "2026-01-01"}]',
                100,
            ),
        ),
        (identity.SIDES, (env, "u0", "u1")),
        (inbound.KNOWN, (env, ["m1", "m2"], *key)),
        (inbound.CLAIM_DELETE, (env, "d1", *key)),
        (inbound.CLAIM_DELETES, (env, ["d1", "d2"], *key)),
        (inbound.HELD, (env, ["u1", "u2"])),
        (inbound.ERASE, (env, "u1", *key[:2])),
        (inbound.RECORD_DELETION, (env, "0" * 64, "d1", "segment", "{}")),
        (inbound.COUNT_UNMATCHED, (env, 1)),
        (ledger.REDELIVERED, (env, ["m1"])),
        (ledger.RECORD, (env, 1, 1, 0, 0, 0, 0, 0, 0)),
        (ledger.RELEASED, (env, "2026-01-01T00:00:00Z", 1, 0)),
        (identity.RECORD_CONFLICT, (env, "linked_elsewhere", "a1", "u1", "u0", "m1", "2026-01-01")),
        # A merge, and its unmerge.
        (merges.MERGE, (env, "u0", "u1", "m1", "rule", "2026-01-01", 0, "{}")),
        (unmerge.FIND, (env, "u0", "u1")),
        (unmerge.MERGED_SINCE, (env, "u1", 1)),
        (unmerge.LOCK_USERS, (env, "u0", "u1")),
        (unmerge.IDS_BACK, (env, "u0", "u1", 1, True)),
        (unmerge.EVENTS_BACK, (env, "u1", 1)),
        (unmerge.RESOLVED_BACK, (env, "u0", "u1", 1)),
        (unmerge.MEMBERSHIPS_BACK, (env, "u0", "u1", '[["g1", "2026-01-01"]]', '["g2"]')),
        (unmerge.PROFILE_BACK, (env, "u0", '{"traits": {}, "trait_times": {}}')),
        (unmerge.OWN_TRAITS, (env, "u1", ["plan"], ["identify"])),
        (unmerge.USER_NOW, (env, "u1")),
        (unmerge.USER_BACK, (env, "u1", "{}", "{}", *[datetime(2026, 1, 1, tzinfo=UTC)] * 4)),
        (unmerge.DONE, (env, 1, "operator", "{}")),
        named(outbox.CLAIM, env=str(env), limit=100),
        named(outbox.MARK_DELIVERED, env=str(env), ids=[1, 2], status=200, body="{}"),
        named(
            outbox.MARK_RETRY,
            env=str(env),
            ids=[1, 2],
            status=500,
            body="{}",
            error="failed",
            delay=1.5,
            max_age=60.0,
        ),
    ]
    for sql, args in statements:
        plan = await explain(pg, sql, *args)
        assert task_counts(plan) and set(task_counts(plan)) == {1}, f"{sql}\n{plan}"
    # The publish path's outbox INSERT, and these, read only their array arguments: Citus
    # expands them on the coordinator and copies the rows, all of one environment, into that
    # environment's shard (no shard is read).
    pulled: list[tuple[str, tuple[Any, ...]]] = [
        (
            violations.RECORD,
            (env, "inbound", ["Order Completed"], ["coupon"], ["unplanned"], [2], ['"SPRING"']),
        ),
        (
            quarantine.KEEP,
            (env, "inbound", ["m1"], ["track"], ["Mystery"], ["{}"], ["[]"], [True]),
        ),
    ]
    for sql, args in pulled:
        plan = await explain(pg, sql, *args)
        assert "INSERT/SELECT method: pull to coordinator" in plan, f"{sql}\n{plan}"
        assert not task_counts(plan), f"{sql}\n{plan}"

    # The events list, as the admin API and the console send it through SQLAlchemy.
    sent: list[tuple[str, Any]] = []
    async with engine.connect() as conn:

        def capture(_c: object, _cur: object, statement: str, parameters: Any, *_: object) -> None:
            sent.append((statement, parameters))

        event.listen(conn.sync_engine, "before_cursor_execute", capture)
        try:
            session = AsyncSession(bind=conn)
            await queries.list_events(session, env, queries.EventFilters(), before=None, limit=51)
            filters = queries.EventFilters(user_id="u1")
            await queries.list_events(session, env, filters, before=None, limit=51)
        finally:
            event.remove(conn.sync_engine, "before_cursor_execute", capture)
    assert sent
    for sql, args in sent:
        plan = await explain(pg, sql, *args)
        assert set(task_counts(plan)) == {1}, f"{sql}\n{plan}"


async def test_the_rows_of_several_environments_sit_on_both_workers(
    cluster: None,
    pg: asyncpg.Connection,
    http: httpx.AsyncClient,
    make_environment: MakeEnv,
) -> None:
    workers = set(
        await pg.fetchval(
            "SELECT array_agg(nodeport) FROM pg_dist_node WHERE groupid <> 0 AND shouldhaveshards"
        )
    )
    assert len(workers) == 2
    sent: dict[uuid.UUID, int] = {}
    ports: set[int] = set()
    # Eight environments, and more should those eight all hash to one worker (1 in 128).
    while len(sent) < 8 or (ports != workers and len(sent) < 40):
        env = await make_environment()
        batch = [identify(new_id("u"), {"n": len(sent)})] + [
            track(new_id("u"), "Seen") for _ in range(len(sent) + 1)
        ]
        response = await http.post(env.webhook_path, json={"batch": batch})
        assert response.status_code == 200, response.text
        sent[env.id] = len(batch)
        ports.add(await node_of(pg, env.id))
    ids = list(sent)
    stored = dict(
        await pg.fetch(
            "SELECT environment_id, count(*) FROM events WHERE environment_id = ANY($1::uuid[])"
            " GROUP BY 1",
            ids,
        )
    )
    assert stored == sent
    assert ports == workers
    database = await pg.fetchval("SELECT current_database()")
    for env_id, count in sent.items():
        shard = await pg.fetchval(
            "SELECT get_shard_id_for_distribution_column('events', CAST($1 AS uuid))", env_id
        )
        on_worker = await asyncpg.connect(
            f"postgresql://postgres@127.0.0.1:{await node_of(pg, env_id)}/{database}"
        )
        try:  # the shard's own table, on the worker itself
            stored_there = await on_worker.fetchval(
                f"SELECT count(*) FROM events_{shard} WHERE environment_id = $1", env_id
            )
        finally:
            await on_worker.close()
        assert stored_there == count


async def node_of(pg: asyncpg.Connection, env_id: uuid.UUID) -> int:
    port: int = await pg.fetchval(
        """SELECT nodeport FROM citus_shards
           WHERE shardid = get_shard_id_for_distribution_column('events', CAST($1 AS uuid))""",
        env_id,
    )
    return port
