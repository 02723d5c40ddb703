"""What per-person order costs the delivery claim (#23.5): the worker's CLAIM
(integration/outbound/outbox.py), which passes over a person's rows while an older one waits,
against the claim it replaced (oldest due first, no order kept), on the same outbox: pending
rows of many persons, some of them waiting for a retry. Postgres's time only, in one
transaction rolled back at the end (each claim in a savepoint of its own), so nothing stays.

    python -m bench.claim_cost   (against BENCH_DATABASE_URL's server, else the embedded one)

Also with all the rows one person's: the order is checked per person, not per row, so a
heavy user costs no more than many (a first version, which checked each row's older rows,
took 3.3 s for that claim).

Always on a database of its own, freshly migrated (`make bench` makes one for it too): inside a
run, after the outbound phases had left some 65,000 delivered rows of another environment in
the outbox, the ANALYZE here estimated 12 persons waiting where there were 200, the planner
chose a nested loop over `waiting` (440,000 comparisons for 2,000 rows claimed) and the ordered
claim took 111 ms against 23 unordered, where a fresh outbox gave 14 against 10: a figure of
whatever the earlier phases left behind, not of the claim.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import time
import uuid
from dataclasses import dataclass

import asyncpg

from bench import servers
from bench.procs import ROOT
from bench.report import Row, ms, num, ratio
from integration.outbound import outbox

# The claim before per-person order: what the ordered one is measured against.
UNORDERED = """
SELECT o.id, o.payload, o.created_at, o.attempts
FROM outbox o
WHERE o.environment_id = $1::uuid AND o.status = 'pending' AND o.next_attempt_at <= now()
ORDER BY o.next_attempt_at, o.id
LIMIT $2
FOR UPDATE SKIP LOCKED
"""

FILL = """
INSERT INTO outbox (environment_id, message_id, type, payload, size_bytes, status,
                    next_attempt_at, identity_key)
SELECT $1::uuid, 'claim-' || g, 'track', jsonb_build_object('userId', 'u-' || g % $3), 20,
       'pending', CASE WHEN g <= $4 THEN now() + interval '1 hour' ELSE now() END,
       'u-' || g % $3
FROM generate_series(1, $2) AS g
"""


@dataclass(frozen=True)
class ClaimCost:
    rows: int  # pending rows in the outbox
    persons: int
    waiting: int  # of them waiting for a retry (the oldest, one per person)
    limit: int
    ordered_ms: float  # median over the repeats
    unordered_ms: float
    ordered_claimed: int  # rows the ordered claim hands out (the waiting persons' are held)
    unordered_claimed: int


def ordered_sql() -> str:
    return outbox.CLAIM.text.replace("CAST(:env AS uuid)", "$1::uuid").replace(":limit", "$2")


async def _median_ms(
    pg: asyncpg.Connection, sql: str, env: uuid.UUID, limit: int, repeats: int
) -> tuple[float, int]:
    spent, claimed = [], 0
    for _ in range(repeats):
        savepoint = pg.transaction()  # rolled back: the locks go, the rows stay as they were
        await savepoint.start()
        began = time.perf_counter()
        claimed = len(await pg.fetch(sql, env, limit))
        spent.append(1000 * (time.perf_counter() - began))
        await savepoint.rollback()
    return statistics.median(spent), claimed


async def claim_both(
    url: str,
    *,
    rows: int = 20_000,
    persons: int = 1_000,
    waiting: int = 200,
    limit: int = 2_000,
    repeats: int = 20,
) -> ClaimCost:
    pg = await asyncpg.connect(servers.plain(url))
    tx = pg.transaction()
    await tx.start()
    try:
        env = uuid.uuid4()
        await pg.execute(
            "INSERT INTO environments (id, name, webhook_key_hash, webhook_key_hint)"
            " VALUES ($1, $2, $3, 'clm')",
            env,
            f"claim-{env.hex[:8]}",
            uuid.uuid4().hex + uuid.uuid4().hex,
        )
        await pg.execute(FILL, env, rows, persons, waiting)
        await pg.execute("ANALYZE outbox")
        for sql in (ordered_sql(), UNORDERED):  # warm: plans, caches
            await _median_ms(pg, sql, env, limit, 2)
        ordered = await _median_ms(pg, ordered_sql(), env, limit, repeats)
        unordered = await _median_ms(pg, UNORDERED, env, limit, repeats)
    finally:
        await tx.rollback()
        await pg.close()
    return ClaimCost(
        rows, persons, waiting, limit, ordered[0], unordered[0], ordered[1], unordered[1]
    )


def measure(url: str, *, rows: int = 20_000, persons: int = 1_000, waiting: int = 200) -> ClaimCost:
    return asyncio.run(claim_both(url, rows=rows, persons=persons, waiting=waiting))


@dataclass(frozen=True)
class ClaimCosts:
    many: ClaimCost  # many persons, some waiting for a retry
    one_person: ClaimCost  # all the rows one person's


def measure_fresh(server_url: str, rows: int = 20_000) -> ClaimCosts:
    """Both claims on a database made and migrated for them, dropped after."""
    name, url = servers.create_database(server_url)
    try:
        secret = "claim-cost-" + secrets.token_urlsafe(24)
        servers.cli({"DATABASE_URL": url, "SECRET_KEY": secret, "ADMIN_TOKEN": secret}, "migrate")
        many = measure(url, rows=rows)
        return ClaimCosts(many, measure(url, rows=rows, persons=1, waiting=0))
    finally:
        servers.drop_database(server_url, name)


def rows(costs: ClaimCosts) -> list[Row]:
    cost, one = costs.many, costs.one_person
    return [
        Row(
            f"outbound: one claim of {num(cost.limit)} of {num(cost.rows)} pending rows"
            f" ({num(cost.persons)} persons, {num(cost.waiting)} waiting for a retry),"
            " Postgres's time: per-person order / the claim without it",
            ms(cost.ordered_ms),
            ms(cost.unordered_ms),
            ratio(cost.ordered_ms, cost.unordered_ms),
        ),
        Row(
            f"outbound: the same claim, all {num(one.rows)} rows one person's",
            ms(one.ordered_ms),
            ms(one.unordered_ms),
            ratio(one.ordered_ms, one.unordered_ms),
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=20_000)
    args = parser.parse_args()
    srv = servers.start(ROOT / ".data-bench")
    try:
        costs = measure_fresh(srv.postgres_url, args.rows)
        print(costs.many)
        print(costs.one_person)
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
