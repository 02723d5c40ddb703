"""What per-person order costs the delivery claim (#23.5): the worker's CLAIM
(integration/outbound/outbox.py), which passes over a person's rows while an older one waits,
against the claim it replaced (oldest due first, no order kept), on the same outbox: pending
rows of many persons, some of them waiting for a retry. Postgres's time only, in one
transaction rolled back at the end (each claim in a savepoint of its own), so nothing stays.

    python -m bench.claim_cost   (against BENCH_DATABASE_URL's server, else the embedded one)

Also with all the rows one person's: the order is checked per person, not per row, so a
heavy user costs no more than many (a first version, which checked each row's older rows,
took 3.3 s for that claim).
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=20_000)
    args = parser.parse_args()
    srv = servers.start(ROOT / ".data-bench")
    name, url = servers.create_database(srv.postgres_url)
    try:
        secret = "claim-cost-" + secrets.token_urlsafe(24)
        servers.cli({"DATABASE_URL": url, "SECRET_KEY": secret, "ADMIN_TOKEN": secret}, "migrate")
        print(measure(url, rows=args.rows))
        print(measure(url, rows=args.rows, persons=1, waiting=0))
    finally:
        servers.drop_database(srv.postgres_url, name)
        srv.stop()


if __name__ == "__main__":
    main()
