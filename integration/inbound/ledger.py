"""The inbound side of the ledger: what each webhook request brought and what became of it,
counted in the group commit's transaction, the one that stores the messages (so a count never
runs ahead of, or behind, the rows it counts).

Per environment and minute (`activity_counts`): received = stored + duplicates + refused +
quarantined, the refusals split by reason. A message is `stored` once it is taken in (a
`delete` carried out counts here: it is acted on, not kept as an event; so does one stored
without the properties its tracking plan did not allow), a `duplicate` when its messageId was
already stored (or erased, or quarantined), `quarantined` when the tracking plan held it whole;
releasing it moves it to `stored` in the minute it was received (`record_releases`). A
request refused whole before its body could be read as messages
(a bad signature, a body that is not JSON, a body over the limit) counts as one refusal. A
request with an unknown key names no environment: it is counted on /metrics only, install-wide
(`integration_inbound_ledger_total{outcome="refused_bad_key"}`), never in the database, so that
an unauthenticated request still costs only the key's lookup.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from integration.metrics import INBOUND_LEDGER, MAPPING_FAILED, children
from integration.store.models import INBOUND

STRIPES = 16
REASONS = ("bad_signature", "invalid", "too_large")
# Message and body errors of the spec that mean "too large"; every other refusal is invalid.
TOO_LARGE_ERRORS = frozenset({"message_too_large", "body_too_large", "too_many_messages"})


def reason_of(error: str) -> str:
    """The ledger's refusal reason for an error code the webhook answered with."""
    if error == "invalid_signature":
        return "bad_signature"
    return "too_large" if error in TOO_LARGE_ERRORS else "invalid"


@dataclass(slots=True)
class Counts:
    """One environment's part of a transaction."""

    stored: int = 0
    duplicates: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    blocked: int = 0  # of the stored: stored as anonymous, their userId a blocked id
    # Of `stored`, those stored unmapped because their mapping failed: outside the sums.
    mapping_failed: int = 0
    quarantined: int = 0  # held whole by the tracking plan

    def add(self, other: Counts) -> None:
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.blocked += other.blocked
        self.mapping_failed += other.mapping_failed
        self.quarantined += other.quarantined
        for reason, n in other.refused.items():
            self.refused[reason] = self.refused.get(reason, 0) + n


# By the minute of the transaction, in this backend's stripe (as the triggers of migration 0006
# do); one statement per environment, environments in a fixed order so that concurrent writers
# lock count rows alike. One environment's row each: on Citus a single-shard statement, run on
# the connection that wrote the environment's messages in this transaction. (A statement over
# a list of environments is run by Citus through intermediate results, on another connection,
# which then waits for the row the shard's counting trigger locked on the first: until
# lock_timeout, and the request answers 503.)
RECORD = f"""
INSERT INTO activity_counts (environment_id, bucket, slot, received, stored, duplicates,
                             refused_signature, refused_invalid, refused_too_large, quarantined,
                             blocked_ids, mapping_failed_inbound)
VALUES ($1::uuid, date_trunc('minute', now()), pg_backend_pid() % {STRIPES},
        $2::bigint + $3::bigint + $4::bigint + $5::bigint + $6::bigint + $7::bigint,
        $2::bigint, $3::bigint, $4::bigint, $5::bigint, $6::bigint, $7::bigint, $8::bigint,
        $9::bigint)
ON CONFLICT (environment_id, bucket, slot) DO UPDATE SET
  mapping_failed_inbound = activity_counts.mapping_failed_inbound
                           + excluded.mapping_failed_inbound,
  received = activity_counts.received + excluded.received,
  quarantined = activity_counts.quarantined + excluded.quarantined,
  stored = activity_counts.stored + excluded.stored,
  duplicates = activity_counts.duplicates + excluded.duplicates,
  refused_signature = activity_counts.refused_signature + excluded.refused_signature,
  refused_invalid = activity_counts.refused_invalid + excluded.refused_invalid,
  refused_too_large = activity_counts.refused_too_large + excluded.refused_too_large,
  blocked_ids = activity_counts.blocked_ids + excluded.blocked_ids
"""

# A redelivery of a stored message is counted on its row, for the trace. A redelivered copy of
# an erased message finds no row and leaves nothing behind. One statement per environment, so
# that on Citus each touches the one shard of its environment (a join on a list of
# environments would be planned on every shard).
REDELIVERED = """
UPDATE events e SET redeliveries = e.redeliveries + d.n, last_redelivered_at = now()
FROM (SELECT mid, count(*) AS n FROM unnest($2::text[]) AS d(mid) GROUP BY 1) d
WHERE e.environment_id = $1::uuid AND e.message_id = d.mid AND e.direction = 'inbound'
"""


async def record(
    pg: asyncpg.Connection,
    counts: dict[uuid.UUID, Counts],
    redelivered: Iterable[tuple[uuid.UUID, str]],
) -> None:
    """Add a transaction's counts and redeliveries, in that transaction."""
    again: dict[uuid.UUID, list[str]] = {}
    for env, message_id in sorted(redelivered):
        again.setdefault(env, []).append(message_id)
    for env, message_ids in again.items():
        await pg.execute(REDELIVERED, env, message_ids)
    for env in sorted(counts):
        c = counts[env]
        if c.stored or c.duplicates or c.refused or c.quarantined:
            refused = [c.refused.get(reason, 0) for reason in REASONS]
            await pg.execute(
                RECORD,
                env,
                c.stored,
                c.duplicates,
                *refused,
                c.quarantined,
                c.blocked,  # blocked and mapping_failed: of the stored, outside the sums
                c.mapping_failed,
            )


# A release moves its messages from `quarantined` to `stored` (or to `duplicates`, for one
# stored meanwhile by another way) in the minute each was received, so every window the
# message was counted in keeps summing exactly; `received` does not change. One row per
# statement, as RECORD (on Citus a single-shard statement on the connection that wrote).
RELEASED = f"""
INSERT INTO activity_counts (environment_id, bucket, slot, stored, duplicates, quarantined)
VALUES ($1::uuid, date_trunc('minute', $2::timestamptz), pg_backend_pid() % {STRIPES},
        $3::bigint, $4::bigint, -($3::bigint + $4::bigint))
ON CONFLICT (environment_id, bucket, slot) DO UPDATE SET
  stored = activity_counts.stored + excluded.stored,
  duplicates = activity_counts.duplicates + excluded.duplicates,
  quarantined = activity_counts.quarantined + excluded.quarantined
"""


async def record_releases(
    pg: asyncpg.Connection, env_id: uuid.UUID, released: list[tuple[datetime, bool]]
) -> None:
    """Count held messages released in this transaction: (when each was received, whether it
    was new to the store)."""
    by_minute: dict[datetime, tuple[int, int]] = {}
    for at, new in released:
        minute = at.replace(second=0, microsecond=0)
        stored, duplicates = by_minute.get(minute, (0, 0))
        by_minute[minute] = (stored + new, duplicates + (not new))
    for minute in sorted(by_minute):  # in a fixed order, as concurrent writers lock rows
        await pg.execute(RELEASED, env_id, minute, *by_minute[minute])
    if released:
        _ledger("released").inc(len(released))


_ledger = children(INBOUND_LEDGER)


def observe(counts: Counts) -> None:
    """The same counts on /metrics, once committed."""
    if counts.stored:
        _ledger("stored").inc(counts.stored)
    if counts.duplicates:
        _ledger("duplicate").inc(counts.duplicates)
    if counts.quarantined:
        _ledger("quarantined").inc(counts.quarantined)
    for reason, n in counts.refused.items():
        _ledger(f"refused_{reason}").inc(n)
    if counts.mapping_failed:
        MAPPING_FAILED.labels(INBOUND).inc(counts.mapping_failed)


def observe_bad_key() -> None:
    _ledger("refused_bad_key").inc()
