"""What one grouped webhook transaction costs the API process, without HTTP: CPU (user and
system) and wall time per transaction for groups of 1, 25 and 500 track messages, each group
written by the webhook's own writer (`GroupCommit`, one writer task, the group's requests
submitted together) into a fresh database. Then
Postgres's own execution time of each statement the writer sends for 500 messages, with the
time spent in triggers (the foreign-key checks), from EXPLAIN ANALYZE.

    python -m bench.writer_cost [--rounds N]

Postgres: BENCH_DATABASE_URL (a server URL; a database is created and dropped), else the
embedded one under .data-bench/. CPU is this process's own: Postgres's time shows only in the
wall figure. Run from an older checkout (`git worktree add`, then `python -m bench.writer_cost`
there with PYTHONPATH set to it) to compare versions side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import secrets
import time
import uuid
from typing import Any

import asyncpg

from bench import payloads, servers
from bench.procs import ROOT
from integration.config import Settings
from integration.inbound import ingest
from integration.inbound.digests import InstallKey
from integration.inbound.group_commit import GroupCommit, Target
from integration.inbound.service import read_batch
from integration.store.db import make_engine

GROUPS = (1, 25, 500)


def body(
    template: str, n: int, company: int | None = None, ts: str = "2026-01-01T00:00:00.000Z"
) -> bytes:
    company = n if company is None else company
    values = {
        payloads.MID: f"wc-{uuid.uuid4().hex}",
        payloads.UID: f"user_{n % payloads.USERS:05d}",
        payloads.CID: f"company_{company % payloads.COMPANIES:03d}",
        payloads.TS: ts,
    }
    for placeholder, value in values.items():
        template = template.replace(placeholder, value)
    return template.encode()


async def measure(settings: Settings, env_id: str, rounds: int) -> list[dict[str, Any]]:
    engine = make_engine(settings)
    # One writer: the `size` submissions queued at once are taken together, one transaction
    # (at most `size` messages each), as the webhook's requests are.
    writers = {
        size: GroupCommit(engine, InstallKey.of(settings), writers=1, max_messages=size)
        for size in GROUPS
    }
    for writer in writers.values():
        writer.start()
    target = Target(uuid.UUID(env_id), "company_id")
    template = payloads.lua_template()
    counter = 0

    async def one(size: int) -> None:
        nonlocal counter
        futures = []
        for _ in range(size):
            counter += 1
            messages = read_batch(body(template, counter)).messages
            futures.append(writers[size].submit(target, messages))
        await asyncio.gather(*futures)

    out = []
    try:
        for size in GROUPS:
            n = max(20, rounds // max(1, size // 5))
            for _ in range(3):
                await one(size)  # prepared statements, caches
            before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            for _ in range(n):
                await one(size)
            after = resource.getrusage(resource.RUSAGE_SELF)
            wall = time.perf_counter() - start
            out.append(
                {
                    "messages": size,
                    "transactions": n,
                    "user_ms": (after.ru_utime - before.ru_utime) / n * 1000,
                    "system_ms": (after.ru_stime - before.ru_stime) / n * 1000,
                    "wall_ms": wall / n * 1000,
                }
            )
    finally:
        for writer in writers.values():
            await writer.stop()
        await engine.dispose()
    return out


class Explaining:
    """Runs each statement twice: under EXPLAIN ANALYZE in a savepoint that is rolled back
    (for Postgres's timings), then for real (so that the writer's next statement sees it)."""

    def __init__(self, pg: asyncpg.Connection) -> None:
        self.pg = pg
        self.timings: list[tuple[str, float, float]] = []  # statement, execution, triggers

    async def _explain(self, query: str, *args: Any) -> None:
        async with self.pg.transaction():  # a savepoint inside the outer transaction
            plan = await self.pg.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {query}", *args)
            raise _Undo(json.loads(plan)[0])

    async def _timed(self, query: str, *args: Any) -> None:
        try:
            await self._explain(query, *args)
        except _Undo as undo:
            triggers = sum(t["Time"] for t in undo.plan.get("Triggers", []))
            self.timings.append(
                (" ".join(query.split()[:3]), undo.plan["Execution Time"], triggers)
            )

    async def fetch(self, query: str, *args: Any) -> Any:
        await self._timed(query, *args)
        return await self.pg.fetch(query, *args)

    async def execute(self, query: str, *args: Any) -> Any:
        await self._timed(query, *args)
        return await self.pg.execute(query, *args)


class _Undo(Exception):
    def __init__(self, plan: dict[str, Any]) -> None:
        self.plan = plan


async def explain(url: str, env_id: str) -> list[tuple[str, float, float]]:
    template = payloads.lua_template()
    messages = []
    for n in range(500):
        # Users seen before, later than before, with companies they are not members of yet:
        # as in `make bench`, where each event names a random company.
        raw = body(template, n, company=n * 7 + 1, ts="2026-01-02T00:00:00.000Z")
        messages.extend(read_batch(raw).messages)
    pg = await asyncpg.connect(servers.plain(url))
    try:
        async with pg.transaction():
            probe = Explaining(pg)
            key = InstallKey(secrets.token_bytes(32))  # no erasures here: any key will do
            await ingest.store(probe, uuid.UUID(env_id), "company_id", messages, key)
            return probe.timings
    finally:
        await pg.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=300, help="single-message transactions")
    args = parser.parse_args()
    srv = servers.start(ROOT / ".data-bench")
    name, url = servers.create_database(srv.postgres_url)
    try:
        env = {
            "DATABASE_URL": url,
            "SECRET_KEY": "writer-cost-" + secrets.token_urlsafe(24),
            "ADMIN_TOKEN": "writer-cost-" + secrets.token_urlsafe(24),
            "LOG_LEVEL": "WARNING",
        }
        servers.cli(env, "migrate")
        created = servers.create_environment(env, "cost")
        settings = Settings(
            database_url=url, secret_key=env["SECRET_KEY"], admin_token=env["ADMIN_TOKEN"]
        )
        rows = asyncio.run(measure(settings, created["id"], args.rounds))
        timings = asyncio.run(explain(url, created["id"]))
    finally:
        servers.drop_database(srv.postgres_url, name)
        srv.stop()
    print("| messages per transaction | transactions | CPU ms (user + system) | wall ms |")
    print("|---:|---:|---:|---:|")
    for r in rows:
        cpu = r["user_ms"] + r["system_ms"]
        print(
            f"| {r['messages']} | {r['transactions']} | {cpu:.2f} ({r['user_ms']:.2f} +"
            f" {r['system_ms']:.2f}) | {r['wall_ms']:.2f} |"
        )
    print()
    print("| statement, 500 messages | Postgres execution ms | of which triggers ms |")
    print("|---|---:|---:|")
    for statement, execution, triggers in timings:
        print(f"| `{statement} …` | {execution:.1f} | {triggers:.1f} |")


if __name__ == "__main__":
    main()
