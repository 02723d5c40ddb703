"""Tracking plans kept in Postgres: one row per version, the highest in force. Services add
and flush; the caller commits."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from integration.errors import BadRequest, Conflict, NotFound
from integration.plans.check import Plan, bag_of
from integration.plans.document import DIRECTIONS, PlanDocument, Settings, parse_plan
from integration.plans.draft import draft
from integration.store.models import Event, TrackingPlan

MAX_DRAFT_DAYS = 90
# The newest messages a draft reads: enough to see every event a product sends, bounded so
# that drafting from a busy environment is a query of seconds, not a scan of months.
DRAFT_SAMPLES = 20_000


def check_direction(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise BadRequest(
            "direction must be inbound or outbound", error="invalid_field", field="direction"
        )
    return direction


async def current(session: AsyncSession, env_id: uuid.UUID, direction: str) -> TrackingPlan | None:
    """The version in force, or None when the environment has no plan for this direction."""
    return await session.scalar(
        select(TrackingPlan)
        .where(TrackingPlan.environment_id == env_id, TrackingPlan.direction == direction)
        .order_by(TrackingPlan.version.desc())
        .limit(1)
    )


async def in_force(session: AsyncSession, env_id: uuid.UUID, direction: str) -> TrackingPlan:
    found = await current(session, env_id, direction)
    if found is None:
        raise NotFound(
            f"this environment has no {direction} tracking plan", error="no_tracking_plan"
        )
    return found


async def versions(
    session: AsyncSession, env_id: uuid.UUID, direction: str, *, below: int | None, limit: int
) -> list[TrackingPlan]:
    """Versions newest first, those below `below` when given (the cursor)."""
    query = select(TrackingPlan).where(
        TrackingPlan.environment_id == env_id, TrackingPlan.direction == direction
    )
    if below is not None:
        query = query.where(TrackingPlan.version < below)
    rows = await session.scalars(query.order_by(TrackingPlan.version.desc()).limit(limit))
    return list(rows)


async def save(
    session: AsyncSession,
    env_id: uuid.UUID,
    direction: str,
    raw_plan: Any,
    settings: Settings,
    *,
    created_by: str,
) -> TrackingPlan:
    """A new version from a plan as a person wrote it (422 naming the path at fault)."""
    document = parse_plan(raw_plan, root="plan")
    return await _add(session, env_id, direction, document, settings, created_by)


async def _add(
    session: AsyncSession,
    env_id: uuid.UUID,
    direction: str,
    document: PlanDocument,
    settings: Settings,
    created_by: str,
) -> TrackingPlan:
    latest = await session.scalar(
        select(func.max(TrackingPlan.version)).where(
            TrackingPlan.environment_id == env_id, TrackingPlan.direction == direction
        )
    )
    row = TrackingPlan(
        environment_id=env_id,
        direction=direction,
        version=(latest or 0) + 1,
        plan=document.model_dump(mode="json", exclude_none=True, exclude_defaults=True),
        unplanned_event=settings.unplanned_event,
        unplanned_property=settings.unplanned_property,
        created_by=created_by,
    )
    session.add(row)
    try:
        await session.flush()
    except IntegrityError:
        # Two changes at once: the unique version refused the second; its writer may retry.
        raise Conflict(
            "the plan was changed at the same moment; read it again and retry",
            error="plan_changed",
        ) from None
    await session.refresh(row)
    return row


async def promote(
    session: AsyncSession,
    source_id: uuid.UUID,
    target_id: uuid.UUID,
    direction: str,
    *,
    created_by: str,
) -> TrackingPlan:
    """The source's plan in force, with its settings, as the target's next version."""
    if source_id == target_id:
        raise BadRequest("promote to another environment", error="invalid_field", field="to")
    source = await in_force(session, source_id, direction)
    return await _add(
        session,
        target_id,
        direction,
        PlanDocument.model_validate(source.plan),
        settings_of(source),
        created_by,
    )


def settings_of(row: TrackingPlan) -> Settings:
    return settings_from(row.unplanned_event, row.unplanned_property)


def settings_from(unplanned_event: str, unplanned_property: str) -> Settings:
    return Settings.model_validate(
        {"unplanned_event": unplanned_event, "unplanned_property": unplanned_property}
    )


def compiled(row: TrackingPlan) -> Plan:
    """The version compiled for checking messages (integration.plans.check)."""
    return compile_version(row.plan, row.unplanned_event, row.unplanned_property, row.direction)


def compile_version(
    plan: dict[str, Any], unplanned_event: str, unplanned_property: str, direction: str
) -> Plan:
    """A stored version compiled (it was validated when it was saved)."""
    settings = settings_from(unplanned_event, unplanned_property)
    return Plan(PlanDocument.model_validate(plan), settings, direction)


async def draft_from_events(
    session: AsyncSession, env_id: uuid.UUID, direction: str, days: int
) -> dict[str, Any]:
    """A plan of the messages stored in the last `days` days (the newest DRAFT_SAMPLES), for a
    person to edit: not saved."""
    if not 1 <= days <= MAX_DRAFT_DAYS:
        raise BadRequest(
            f"days must be a whole number from 1 to {MAX_DRAFT_DAYS}",
            error="invalid_field",
            field="days",
        )
    since = datetime.now(UTC) - timedelta(days=days)
    rows = await session.execute(
        select(Event.type, Event.name, Event.properties, Event.traits)
        .where(
            Event.environment_id == env_id,
            Event.direction == direction,
            Event.timestamp >= since,
        )
        .order_by(Event.timestamp.desc())
        .limit(DRAFT_SAMPLES)
    )
    return draft(_samples(rows.tuples()))


def _samples(
    rows: Iterator[tuple[str, str | None, dict[str, Any] | None, dict[str, Any] | None]],
) -> Iterator[tuple[str, str | None, Mapping[str, Any] | None]]:
    for kind, name, properties, traits in rows:
        yield kind, name, properties if bag_of(kind) == "properties" else traits
