"""The quarantine: messages a tracking plan did not fit, kept whole with their violations until
a person releases them (stored or sent as they came) or discards them, one by one or by filter.
Services add and flush; the caller commits."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from sqlalchemy import ColumnElement, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from integration.errors import BadRequest
from integration.plans.check import Verdict, name_of
from integration.store.models import Event, Quarantined

# The most rows one release or discard acts on: each release stores or queues its messages in
# the caller's transaction, which must stay short.
MAX_ROWS_PER_CALL = 1000
QUARANTINED = "quarantined"

# Stores (inbound) or queues for Segment (outbound) the messages of rows of one direction, as
# they were quarantined, in the caller's transaction, without judging them against the plan
# again (and counts the release in the ledger).
Deliver = Callable[[str, list[Quarantined]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Filter:
    """Which quarantined rows: the ids given, else every one matching the rest."""

    ids: Sequence[int] | None = None
    direction: str | None = None
    event: str | None = None
    type: str | None = None

    def where(self, env_id: uuid.UUID) -> list[ColumnElement[bool]]:
        out = [Quarantined.environment_id == env_id, Quarantined.state == QUARANTINED]
        if self.ids is not None:
            out.append(Quarantined.id.in_(list(self.ids)))
        if self.direction is not None:
            out.append(Quarantined.direction == self.direction)
        if self.event is not None:
            out.append(Quarantined.event == self.event)
        if self.type is not None:
            out.append(Quarantined.type == self.type)
        return out


KEEP = """
INSERT INTO quarantine (environment_id, direction, message_id, type, event, message, violations,
                        held)
SELECT CAST($1 AS uuid), $2, t.message_id, t.type, t.event, CAST(t.message AS jsonb),
       CAST(t.violations AS jsonb), t.held
FROM unnest(CAST($3 AS text[]), CAST($4 AS text[]), CAST($5 AS text[]), CAST($6 AS text[]),
            CAST($7 AS text[]), CAST($8 AS boolean[]))
     AS t(message_id, type, event, message, violations, held)
ON CONFLICT (environment_id, direction, message_id) DO NOTHING
RETURNING message_id
"""


async def keep(
    pg: asyncpg.Connection,
    env_id: uuid.UUID,
    direction: str,
    judged: Sequence[tuple[Mapping[str, Any], Verdict]],
) -> set[str]:
    """Keep each original message whose verdict says to quarantine it, whole, with its
    violations, in the caller's transaction (one statement); returns the messageIds that were
    new. A messageId quarantined before (held, released or discarded) is not kept again:
    Segment's redelivery of it is a duplicate."""
    kept = [(m, v) for m, v in judged if v.quarantine]
    if not kept:
        return set()
    new = await pg.fetch(
        KEEP,
        env_id,
        direction,
        [str(m.get("messageId") or "") for m, _ in kept],
        [str(m.get("type") or "") for m, _ in kept],
        [name_of(m) for m, _ in kept],
        [orjson.dumps(m).decode() for m, _ in kept],
        [orjson.dumps([x.as_dict() for x in v.violations]).decode() for _, v in kept],
        [v.held for _, v in kept],
    )
    return {row["message_id"] for row in new}


async def listing(
    session: AsyncSession, env_id: uuid.UUID, found: Filter, *, before_id: int | None, limit: int
) -> list[Quarantined]:
    """Rows still quarantined, newest first."""
    query = select(Quarantined).where(*found.where(env_id))
    if before_id is not None:
        query = query.where(Quarantined.id < before_id)
    return list(await session.scalars(query.order_by(Quarantined.id.desc()).limit(limit)))


@dataclass(frozen=True, slots=True)
class Picked:
    rows: list[Quarantined]
    more: bool  # more match than one call acts on


async def pick(session: AsyncSession, env_id: uuid.UUID, found: Filter) -> Picked:
    """Up to MAX_ROWS_PER_CALL rows to act on, oldest first, locked against a concurrent
    release or discard of the same rows (which skips them)."""
    if found.ids is not None and len(found.ids) > MAX_ROWS_PER_CALL:
        raise BadRequest(
            f"at most {MAX_ROWS_PER_CALL} ids per call", error="invalid_field", field="ids"
        )
    query = (
        select(Quarantined)
        .where(*found.where(env_id))
        .order_by(Quarantined.id)
        .limit(MAX_ROWS_PER_CALL + 1)
        .with_for_update(skip_locked=True)
    )
    rows = list(await session.scalars(query))
    return Picked(rows[:MAX_ROWS_PER_CALL], len(rows) > MAX_ROWS_PER_CALL)


async def discard(session: AsyncSession, rows: Sequence[Quarantined], *, actor: str) -> int:
    """Marks the rows discarded: their messages are never stored or sent."""
    await _resolve(session, rows, "discarded", actor)
    return len(rows)


async def release(
    session: AsyncSession,
    env_id: uuid.UUID,
    rows: Sequence[Quarantined],
    deliver: Deliver,
    *,
    actor: str,
) -> int:
    """Store or send each row's message as it came, through `deliver`, in this transaction.

    An inbound message that was stored without the properties at fault (not `held`) is stored
    again whole: its stripped event row is removed first, so that `deliver` (whose store treats
    a known messageId as a redelivery and changes nothing) writes the original in its place and
    applies what it changes (traits, memberships) as on its first arrival."""
    stripped = [r.message_id for r in rows if r.direction == "inbound" and not r.held]
    if stripped:
        await session.execute(
            delete(Event).where(
                Event.environment_id == env_id,
                Event.direction == "inbound",
                Event.message_id.in_(stripped),
            )
        )
    for direction in ("inbound", "outbound"):
        chosen = [r for r in rows if r.direction == direction]
        if chosen:
            await deliver(direction, chosen)
    await _resolve(session, rows, "released", actor)
    return len(rows)


async def _resolve(
    session: AsyncSession, rows: Sequence[Quarantined], state: str, actor: str
) -> None:
    if not rows:
        return
    await session.execute(
        update(Quarantined)
        .where(
            Quarantined.environment_id == rows[0].environment_id,
            Quarantined.id.in_([r.id for r in rows]),
        )
        .values(state=state, resolved_at=func.now(), resolved_by=actor)
        .execution_options(synchronize_session=False)
    )


async def trace(
    session: AsyncSession, env_id: uuid.UUID, message_id: str, direction: str | None = None
) -> list[Quarantined]:
    """A messageId's rows in quarantine (one per direction at most), for its trace."""
    query = select(Quarantined).where(
        Quarantined.environment_id == env_id, Quarantined.message_id == message_id
    )
    if direction is not None:
        query = query.where(Quarantined.direction == direction)
    return list(await session.scalars(query.order_by(Quarantined.id)))


def steps(row: Quarantined) -> tuple[list[dict[str, Any]], str | None]:
    """The row's steps in its message's lifecycle, and the message's state while the quarantine
    decides it (held, or discarded); None when the store or the outbox does (it was stored
    stripped, or released)."""
    faults = "; ".join(
        f"{v.get('property') or 'the event'}: {v.get('rule')}" for v in row.violations
    )
    what = "held whole" if row.held else "stored without the properties at fault"
    out: list[dict[str, Any]] = [
        {
            "at": row.received_at.isoformat(),
            "direction": row.direction,
            "step": QUARANTINED,
            "detail": f"{what} by the tracking plan ({faults})",
        }
    ]
    if row.resolved_at is not None:
        out.append(
            {
                "at": row.resolved_at.isoformat(),
                "direction": row.direction,
                "step": row.state,
                "detail": f"by {row.resolved_by}",
            }
        )
    held = row.held and row.state != "released"
    return out, (row.state if held else None)
