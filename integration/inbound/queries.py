"""What the admin API (and the console) read of the inbound store: users, companies, events
and activity counts, each query scoped to one environment and served from an index.

Lists are keyset-paginated newest first: callers pass the last row's key and how many rows to
fetch (one more than a page, to learn whether another page exists).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from integration.errors import NotFound
from integration.store.models import AnonymousId, Company, Event, Membership, User

RECENT_EVENTS = 50
MEMBERS_SHOWN = 100


@dataclass(frozen=True, slots=True)
class UserDetail:
    user: User
    anonymous_ids: list[str]
    companies: list[Company]
    recent_events: list[Event]


@dataclass(frozen=True, slots=True)
class CompanyDetail:
    company: Company
    member_count: int
    members: list[User]


@dataclass(frozen=True, slots=True)
class EventFilters:
    user_id: str | None = None
    anonymous_id: str | None = None
    company: str | None = None
    type: str | None = None
    name: str | None = None
    direction: str | None = None
    since: datetime | None = None
    until: datetime | None = None


async def list_users(
    session: AsyncSession,
    env_id: uuid.UUID,
    *,
    traits: list[tuple[str, str]],
    seen_since: datetime | None,
    before_id: int | None,
    limit: int,
) -> list[User]:
    stmt = select(User).where(User.environment_id == env_id)
    for key, value in traits:
        stmt = stmt.where(User.traits[key].astext == value)
    if seen_since:
        stmt = stmt.where(User.last_seen_at >= seen_since)
    if before_id:
        stmt = stmt.where(User.id < before_id)
    return list(await session.scalars(stmt.order_by(User.id.desc()).limit(limit)))


async def user_detail(session: AsyncSession, env_id: uuid.UUID, user_id: str) -> UserDetail:
    user = await _one(session, User, User.user_id, env_id, user_id, "user")
    anonymous = await session.scalars(
        select(AnonymousId.anonymous_id)
        .where(AnonymousId.environment_id == env_id, AnonymousId.user_id == user_id)
        .order_by(AnonymousId.anonymous_id)
    )
    companies = await session.scalars(
        select(Company)
        .join(
            Membership,
            (Membership.environment_id == Company.environment_id)
            & (Membership.group_id == Company.group_id),
        )
        .where(Membership.environment_id == env_id, Membership.user_id == user_id)
        .order_by(Company.group_id)
    )
    events = await session.scalars(
        select(Event)
        .where(Event.environment_id == env_id, Event.user_id == user_id)
        .order_by(Event.timestamp.desc(), Event.id.desc())
        .limit(RECENT_EVENTS)
    )
    return UserDetail(user, list(anonymous), list(companies), list(events))


async def list_companies(
    session: AsyncSession,
    env_id: uuid.UUID,
    *,
    traits: list[tuple[str, str]],
    before_id: int | None,
    limit: int,
) -> list[Company]:
    stmt = select(Company).where(Company.environment_id == env_id)
    for key, value in traits:
        stmt = stmt.where(Company.traits[key].astext == value)
    if before_id:
        stmt = stmt.where(Company.id < before_id)
    return list(await session.scalars(stmt.order_by(Company.id.desc()).limit(limit)))


async def company_detail(session: AsyncSession, env_id: uuid.UUID, group_id: str) -> CompanyDetail:
    company = await _one(session, Company, Company.group_id, env_id, group_id, "company")
    members_of = (Membership.environment_id == env_id) & (Membership.group_id == group_id)
    count = await session.scalar(select(func.count()).select_from(Membership).where(members_of))
    members = await session.scalars(
        select(User)
        .join(
            Membership,
            (Membership.environment_id == User.environment_id)
            & (Membership.user_id == User.user_id),
        )
        .where(members_of)
        .order_by(User.user_id)
        .limit(MEMBERS_SHOWN)
    )
    return CompanyDetail(company, count or 0, list(members))


_EVENT_COLUMNS = {
    "user_id": Event.user_id,
    "anonymous_id": Event.anonymous_id,
    "company": Event.group_id,
    "type": Event.type,
    "name": Event.name,
    "direction": Event.direction,
}


async def list_events(
    session: AsyncSession,
    env_id: uuid.UUID,
    filters: EventFilters,
    *,
    before: tuple[datetime, int] | None,
    limit: int,
) -> list[Event]:
    """Newest first by message time; `before` is the last row's (timestamp, id)."""
    stmt = select(Event).where(Event.environment_id == env_id)
    for name, column in _EVENT_COLUMNS.items():
        value = getattr(filters, name)
        if value is not None:
            stmt = stmt.where(column == value)
    if filters.since:
        stmt = stmt.where(Event.timestamp >= filters.since)
    if filters.until:
        stmt = stmt.where(Event.timestamp < filters.until)
    if before:
        stmt = stmt.where(_before(*before))
    stmt = stmt.order_by(Event.timestamp.desc(), Event.id.desc()).limit(limit)
    return list(await session.scalars(stmt))


def _before(at: datetime, last_id: int) -> ColumnElement[bool]:
    return or_(Event.timestamp < at, and_(Event.timestamp == at, Event.id < last_id))


ACTIVITY = text("""
SELECT
  (SELECT count(*) FROM users WHERE environment_id = :env) AS users,
  (SELECT count(*) FROM companies WHERE environment_id = :env) AS companies,
  (SELECT count(*) FROM events WHERE environment_id = :env AND direction = 'inbound')
      AS events_total,
  (SELECT count(*) FROM events WHERE environment_id = :env AND direction = 'inbound'
      AND created_at >= now() - interval '1 hour') AS events_last_hour,
  (SELECT count(*) FROM events WHERE environment_id = :env AND direction = 'inbound'
      AND created_at >= now() - interval '1 day') AS events_last_day,
  (SELECT max(created_at) FROM events WHERE environment_id = :env AND direction = 'inbound')
      AS last_inbound_at
""")


async def activity(session: AsyncSession, env_id: uuid.UUID) -> dict[str, Any]:
    """Counts and the last arrival time of the environment's inbound data."""
    return dict((await session.execute(ACTIVITY, {"env": env_id})).mappings().one())


async def _one(
    session: AsyncSession,
    model: type[User] | type[Company],
    key: Any,
    env_id: uuid.UUID,
    value: str,
    noun: str,
) -> Any:
    # Postgres text cannot hold NUL, so no such row can exist (and the query would fail).
    row = (
        None
        if "\x00" in value
        else await session.scalar(select(model).where(model.environment_id == env_id, key == value))
    )
    if row is None:
        raise NotFound(f"no {noun} {value!r} in this environment")
    return row
