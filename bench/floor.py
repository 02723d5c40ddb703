"""The Postgres floor: the rows the batch phase makes (events, and the users, companies,
anonymous ids and memberships they imply) written straight into the same schema with COPY
(asyncpg's binary `copy_records_to_table`), without HTTP, validation or upserts. No server
path can store these rows faster on this machine: ours / floor is what the product costs.

    python -m bench.floor [--events N]   (against BENCH_DATABASE_URL, else the embedded server)
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from bench import payloads, servers
from bench.procs import ROOT

CHUNK = 10_000  # rows per COPY, as a batch of requests would bring them

EVENT_COLUMNS = (
    "environment_id",
    "message_id",
    "type",
    "name",
    "user_id",
    "anonymous_id",
    "group_id",
    "properties",
    "context",
    "extra",
    "timestamp",
    "sent_at",
    "received_at",
)


@dataclass
class Floor:
    events: int
    seconds: float

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def event_rows(env: uuid.UUID, n: int, run: str) -> list[tuple[Any, ...]]:
    """`n` track events as the batch phase sends them: a random user of 10,000 and a random
    company of 200 each (bench/lua/webhook.lua draws them the same way)."""
    now = datetime.now(UTC)
    context = _json(payloads.context())
    rows = []
    for i in range(n):
        user = payloads.user_id(random.randrange(payloads.USERS))
        company = payloads.company_id(random.randrange(payloads.COMPANIES))
        rows.append(
            (
                env,
                f"{run}-{i}",
                "track",
                payloads.EVENT,
                user,
                "anon-" + user,
                company,
                _json(payloads.properties(company)),
                context,
                '{"version": 2}',
                now,
                now,
                None,
            )
        )
    return rows


async def _copy(pg: asyncpg.Connection, env: uuid.UUID, rows: list[tuple[Any, ...]]) -> None:
    """One transaction: the events, then the profiles and links they imply."""
    now = datetime.now(UTC)
    users = sorted({r[4] for r in rows})
    companies = sorted({r[6] for r in rows})
    async with pg.transaction():
        await pg.copy_records_to_table("events", records=rows, columns=EVENT_COLUMNS)
        await pg.copy_records_to_table(
            "users",
            records=[(env, u, now, now) for u in users],
            columns=("environment_id", "user_id", "first_seen_at", "last_seen_at"),
        )
        await pg.copy_records_to_table(
            "companies",
            records=[(env, c, now, now) for c in companies],
            columns=("environment_id", "group_id", "first_seen_at", "last_seen_at"),
        )
        await pg.copy_records_to_table(
            "anonymous_ids",
            records=[(env, "anon-" + u, u) for u in users],
            columns=("environment_id", "anonymous_id", "user_id"),
        )
        await pg.copy_records_to_table(
            "memberships",
            records=sorted({(env, r[4], r[6]) for r in rows}),
            columns=("environment_id", "user_id", "group_id"),
        )


def measure(url: str, events: int) -> Floor:
    return asyncio.run(copy_events(url, events))


async def copy_events(url: str, events: int) -> Floor:
    """COPY `events` events (and what they imply) in chunks, each chunk into an environment of
    its own (so the profile rows are new, as COPY cannot upsert); the time of the COPYs only."""
    pg = await asyncpg.connect(servers.plain(url))
    run = uuid.uuid4().hex[:8]
    spent = 0.0
    try:
        for start in range(0, events, CHUNK):
            env = uuid.uuid4()
            await pg.execute(
                "INSERT INTO environments (id, name, webhook_key_hash, webhook_key_hint)"
                " VALUES ($1, $2, $3, 'flor')",
                env,
                f"floor-{run}-{start}",
                uuid.uuid4().hex + uuid.uuid4().hex,
            )
            rows = event_rows(env, min(CHUNK, events - start), f"floor-{run}-{start}")
            began = time.perf_counter()
            await _copy(pg, env, rows)
            spent += time.perf_counter() - began
    finally:
        await pg.close()
    return Floor(events, spent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    srv = servers.start(ROOT / ".data-bench")
    name, url = servers.create_database(srv.postgres_url)
    try:
        servers.cli({"DATABASE_URL": url}, "migrate")
        floor = measure(url, args.events)
    finally:
        servers.drop_database(srv.postgres_url, name)
        srv.stop()
    print(
        f"floor: {floor.events:,} events by COPY in {floor.seconds:.2f} s:"
        f" {floor.events_per_s:,.0f} events/s"
    )


if __name__ == "__main__":
    main()
