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
from integration.inbound.ingest import USER_TRAIT_TYPES
from integration.spec import KNOWN_TYPES
from integration.store import activity as store_activity
from integration.store.models import (
    AnonymousId,
    Company,
    Deletion,
    ErasureCount,
    Event,
    IdentityConflict,
    IdentityLog,
    Membership,
    User,
)

RECENT_EVENTS = 50
MEMBERS_SHOWN = 100
# A user's page lists this many of its anonymous ids and counts them all: a user with ten
# thousand devices still has a page of one size.
ANONYMOUS_IDS_SHOWN = 1000


@dataclass(frozen=True, slots=True)
class FoundUser:
    user: User
    anonymous_ids: list[str]
    companies: list[Company]
    recent_events: list[Event]
    anonymous_id_count: int = 0


@dataclass(frozen=True, slots=True)
class FoundCompany:
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


# What a search box finds a profile by: its id, or this trait (an exact match either way).
SEARCH_TRAIT = {"users": "email", "companies": "name"}


async def list_users(
    session: AsyncSession,
    env_id: uuid.UUID,
    *,
    traits: list[tuple[str, str]],
    seen_since: datetime | None,
    before_id: int | None,
    limit: int,
    search: str | None = None,
) -> list[User]:
    """Newest first. `search` matches the userId or the email trait exactly: the id through
    the unique index, the trait by scanning the environment's users (no index is kept on
    traits, which every identify rewrites)."""
    stmt = select(User).where(User.environment_id == env_id)
    if search:
        stmt = stmt.where(
            or_(User.user_id == search, User.traits[SEARCH_TRAIT["users"]].astext == search)
        )
    for key, value in traits:
        stmt = stmt.where(User.traits[key].astext == value)
    if seen_since:
        stmt = stmt.where(User.last_seen_at >= seen_since)
    if before_id:
        stmt = stmt.where(User.id < before_id)
    return list(await session.scalars(stmt.order_by(User.id.desc()).limit(limit)))


async def user_detail(session: AsyncSession, env_id: uuid.UUID, user_id: str) -> FoundUser:
    user = await _one(session, User, User.user_id, env_id, user_id, "user")
    anonymous, anonymous_count = await _anonymous_ids(session, env_id, user_id)
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
    return FoundUser(user, anonymous, list(companies), list(events), anonymous_count)


async def _anonymous_ids(
    session: AsyncSession, env_id: uuid.UUID, user_id: str
) -> tuple[list[str], int]:
    """The first ANONYMOUS_IDS_SHOWN of the user's anonymous ids (in order), and how many
    it has."""
    mine = (AnonymousId.environment_id == env_id) & (AnonymousId.user_id == user_id)
    shown = await session.scalars(
        select(AnonymousId.anonymous_id)
        .where(mine)
        .order_by(AnonymousId.anonymous_id)
        .limit(ANONYMOUS_IDS_SHOWN)
    )
    listed = list(shown)
    if len(listed) < ANONYMOUS_IDS_SHOWN:
        return listed, len(listed)
    count = await session.scalar(select(func.count()).select_from(AnonymousId).where(mine))
    return listed, int(count or 0)


IDENTITY_ROWS = 200


@dataclass(frozen=True, slots=True)
class FoundIdentity:
    """How one id is tied to others: the anonymous ids linked to it, the links and merges into
    it and out of it (the merge log, newest first), and the conflicts naming it."""

    user_id: str
    anonymous_ids: list[str]
    merges_in: list[IdentityLog]
    merges_out: list[IdentityLog]
    conflicts: list[IdentityConflict]
    anonymous_id_count: int = 0


async def identity(session: AsyncSession, env_id: uuid.UUID, user_id: str) -> FoundIdentity:
    """The identity of `user_id`, a user or an id merged into one; NotFound when nothing is
    held about it."""
    anonymous, anonymous_count = await _anonymous_ids(session, env_id, user_id)

    async def log(side: Any) -> list[IdentityLog]:
        stmt = (
            select(IdentityLog)
            .where(IdentityLog.environment_id == env_id, side == user_id)
            .order_by(IdentityLog.id.desc())
            .limit(IDENTITY_ROWS)
        )
        return list(await session.scalars(stmt))

    conflicts = await session.scalars(
        select(IdentityConflict)
        .where(
            IdentityConflict.environment_id == env_id,
            or_(
                IdentityConflict.user_id == user_id,
                IdentityConflict.from_id == user_id,
                IdentityConflict.existing_user_id == user_id,
            ),
        )
        .order_by(IdentityConflict.id.desc())
        .limit(IDENTITY_ROWS)
    )
    found = FoundIdentity(
        user_id,
        anonymous,
        await log(IdentityLog.user_id),
        await log(IdentityLog.from_id),
        list(conflicts),
        anonymous_count,
    )
    if not (found.anonymous_ids or found.merges_in or found.merges_out or found.conflicts):
        await _one(session, User, User.user_id, env_id, user_id, "user")
    return found


async def list_companies(
    session: AsyncSession,
    env_id: uuid.UUID,
    *,
    traits: list[tuple[str, str]],
    before_id: int | None,
    limit: int,
    search: str | None = None,
) -> list[Company]:
    """Newest first. `search` matches the groupId or the name trait exactly."""
    stmt = select(Company).where(Company.environment_id == env_id)
    if search:
        stmt = stmt.where(
            or_(
                Company.group_id == search,
                Company.traits[SEARCH_TRAIT["companies"]].astext == search,
            )
        )
    for key, value in traits:
        stmt = stmt.where(Company.traits[key].astext == value)
    if before_id:
        stmt = stmt.where(Company.id < before_id)
    return list(await session.scalars(stmt.order_by(Company.id.desc()).limit(limit)))


async def company_detail(session: AsyncSession, env_id: uuid.UUID, group_id: str) -> FoundCompany:
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
    return FoundCompany(company, count or 0, list(members))


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


async def list_deletions(
    session: AsyncSession, env_id: uuid.UUID, *, before_id: int | None, limit: int
) -> list[Deletion]:
    """The erasure audit trail, newest first."""
    stmt = select(Deletion).where(Deletion.environment_id == env_id)
    if before_id:
        stmt = stmt.where(Deletion.id < before_id)
    return list(await session.scalars(stmt.order_by(Deletion.id.desc()).limit(limit)))


async def unmatched_deletes(session: AsyncSession, env_id: uuid.UUID) -> dict[str, Any]:
    """How many Segment deletes found nothing to erase, and when the last one came."""
    row = await session.get(ErasureCount, env_id)
    return {"count": row.unmatched if row else 0, "last_at": row.last_unmatched_at if row else None}


COUNTS = text("""
SELECT (SELECT count(*) FROM users WHERE environment_id = :env) AS users,
       (SELECT count(*) FROM companies WHERE environment_id = :env) AS companies
""")


async def activity(session: AsyncSession, env_id: uuid.UUID) -> dict[str, Any]:
    """Profiles counted; events stored (all, last hour, last day) and the last arrival, from
    the per-minute activity counts (never a count over the events themselves)."""
    counts = dict((await session.execute(COUNTS, {"env": env_id})).mappings().one())
    totals = await store_activity.totals(session, env_id)
    return {
        **counts,
        **{k: totals[k] for k in ("events_total", "events_last_hour", "events_last_day")},
        "last_inbound_at": totals["last_inbound_at"],
    }


async def last_arrivals(
    session: AsyncSession, env_ids: list[uuid.UUID]
) -> dict[uuid.UUID, datetime | None]:
    """When each environment last stored a message, from the activity counts."""
    return {
        env: last.inbound for env, last in (await store_activity.last(session, env_ids)).items()
    }


async def arrivals(session: AsyncSession, env_id: uuid.UUID) -> list[Event]:
    """The last LIVE_MESSAGES stored messages in the order they arrived, newest first: ids
    are given in arrival order, and the primary key (environment_id, id) orders them."""
    return list(
        await session.scalars(
            select(Event)
            .where(Event.environment_id == env_id)
            .order_by(Event.id.desc())
            .limit(LIVE_MESSAGES)
        )
    )


LIVE_MESSAGES = 100


async def arrivals_per_minute(
    session: AsyncSession, env_id: uuid.UUID, since: datetime
) -> dict[datetime, int]:
    """Messages stored per minute since `since`, from the activity counts."""
    minutes = await store_activity.per_minute(session, env_id, since)
    return {minute: inbound for minute, inbound, _ in minutes if inbound}


async def event(session: AsyncSession, env_id: uuid.UUID, event_id: int) -> Event:
    found = await session.scalar(
        select(Event).where(Event.environment_id == env_id, Event.id == event_id)
    )
    if found is None:
        raise NotFound("no such event in this environment")
    return found


async def event_id_of(session: AsyncSession, env_id: uuid.UUID, message_id: str) -> int | None:
    """The stored event with this messageId (through the unique index), if any."""
    if "\x00" in message_id:
        return None
    return await session.scalar(
        select(Event.id).where(Event.environment_id == env_id, Event.message_id == message_id)
    )


def stored_message(e: Event) -> dict[str, Any]:
    """A stored event as the message it was: the spec's fields under their Segment names, and
    whatever else it carried (`extra`) as it came. A message of an unknown type was kept
    whole in `extra`."""
    if e.type not in KNOWN_TYPES:
        return dict(e.extra or {})
    fields: dict[str, Any] = {
        "type": e.type,
        "messageId": e.message_id,
        "userId": e.user_id,
        "anonymousId": e.anonymous_id,
        "groupId": e.group_id if e.type == "group" else None,
        "event" if e.type == "track" else "name": e.name,
        "properties": e.properties,
        "traits": e.traits,
        "context": e.context,
        "timestamp": e.timestamp.isoformat(),
        "sentAt": e.sent_at.isoformat() if e.sent_at else None,
        "receivedAt": e.received_at.isoformat() if e.received_at else None,
    }
    return {**{k: v for k, v in fields.items() if v is not None}, **(e.extra or {})}


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


@dataclass(frozen=True, slots=True)
class InboundTrace:
    """A stored inbound message: when it came, how often again, what it changed."""

    received_at: datetime
    type: str
    event: str | None
    redeliveries: int
    last_redelivered_at: datetime | None
    changed: dict[str, Any]
    mapping_error: str | None


def _changed(e: Event) -> dict[str, Any]:
    """What storing the message changed: the user it was about (traits, for an identify or an
    event, ingest.USER_TRAIT_TYPES), the
    company (traits, for a group) and the membership linking them. A duplicate changed nothing,
    so this is the first copy's doing."""
    changed: dict[str, Any] = {}
    if e.type not in KNOWN_TYPES:
        return changed
    if e.user_id:
        changed["user"] = {"user_id": e.user_id, "traits": sorted((e.traits or {}).keys())}
        if e.type not in USER_TRAIT_TYPES:
            changed["user"] = {"user_id": e.user_id, "traits": []}
    if e.anonymous_id and e.user_id:
        changed["anonymous_id_linked"] = e.anonymous_id
    if e.group_id:
        traits = sorted((e.traits or {}).keys()) if e.type == "group" else []
        changed["company"] = {"group_id": e.group_id, "traits": traits}
        member = e.user_id
        if member:
            changed["membership"] = {"user_id": member, "group_id": e.group_id}
    return changed


async def inbound_trace(
    session: AsyncSession, env_id: uuid.UUID, message_id: str
) -> InboundTrace | None:
    """The stored inbound message with this messageId, traced; None if none is held (never
    received, refused, or erased)."""
    if "\x00" in message_id:
        return None
    e = await session.scalar(
        select(Event).where(
            Event.environment_id == env_id,
            Event.message_id == message_id,
            Event.direction == "inbound",
        )
    )
    if e is None:
        return None
    return InboundTrace(
        e.created_at,
        e.type,
        e.name,
        e.redeliveries,
        e.last_redelivered_at,
        _changed(e),
        e.mapping_error,
    )


def _at(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def inbound_steps(found: InboundTrace) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = [
        {
            "at": _at(found.received_at),
            "direction": "inbound",
            "step": "stored",
            "type": found.type,
            "event": found.event,
            "changed": found.changed,
        }
    ]
    if found.mapping_error is not None:
        steps[0]["mapping_error"] = f"stored unmapped: {found.mapping_error}"
    if found.redeliveries:
        steps.append(
            {
                "at": _at(found.last_redelivered_at),
                "direction": "inbound",
                "step": "redelivered",
                "times": found.redeliveries,
                "detail": "Segment sent it again; acknowledged, changed nothing",
            }
        )
    return steps
