"""The quarantine: messages a tracking plan did not fit, kept whole with their violations until
a person releases them (stored or sent as they came) or discards them, one by one or by filter.
Services add and flush; the caller commits."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from integration.errors import BadRequest
from integration.plans.check import Verdict, name_of
from integration.store.models import Event, Quarantined

# The most rows one release or discard acts on: each release stores or queues its messages in
# the caller's transaction, which must stay short.
MAX_ROWS_PER_CALL = 1000
QUARANTINED = "quarantined"

# Stores (inbound) or queues for Segment (outbound) messages of one direction, as they came,
# in the caller's transaction, without judging them against the plan again.
Deliver = Callable[[str, list[dict[str, Any]]], Awaitable[None]]


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


def row_of(
    env_id: uuid.UUID, direction: str, original: Mapping[str, Any], verdict: Verdict
) -> Quarantined:
    """The row that keeps `original` whole, for a verdict that says to quarantine it."""
    kind = original.get("type")
    return Quarantined(
        environment_id=env_id,
        direction=direction,
        message_id=str(original.get("messageId") or ""),
        type=kind if isinstance(kind, str) else "",
        event=name_of(original),
        message=dict(original),
        violations=[v.as_dict() for v in verdict.violations],
        held=verdict.held,
    )


async def keep(session: AsyncSession, rows: Sequence[Quarantined]) -> None:
    """Quarantine these rows (made by `row_of`) in the caller's transaction."""
    session.add_all(rows)
    await session.flush()


async def listing(
    session: AsyncSession, env_id: uuid.UUID, found: Filter, *, before_id: int | None, limit: int
) -> list[Quarantined]:
    """Rows still quarantined, newest first."""
    query = select(Quarantined).where(*found.where(env_id))
    if before_id is not None:
        query = query.where(Quarantined.id < before_id)
    return list(await session.scalars(query.order_by(Quarantined.id.desc()).limit(limit)))


async def count(session: AsyncSession, env_id: uuid.UUID, found: Filter) -> int:
    return (
        await session.scalar(
            select(func.count()).select_from(Quarantined).where(*found.where(env_id))
        )
        or 0
    )


async def pick(session: AsyncSession, env_id: uuid.UUID, found: Filter) -> list[Quarantined]:
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
        .limit(MAX_ROWS_PER_CALL)
        .with_for_update(skip_locked=True)
    )
    return list(await session.scalars(query))


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
        messages = [dict(r.message) for r in rows if r.direction == direction]
        if messages:
            await deliver(direction, messages)
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
