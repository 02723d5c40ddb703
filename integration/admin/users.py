"""/api/environments/{id}/users: browse users, read one with everything about them, delete one."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from integration.admin import pagination, params
from integration.admin.common import environment, unit_of_work
from integration.admin.pagination import PAGE_PARAMS
from integration.admin.schemas import (
    CompanyOut,
    EventOut,
    UserDeleted,
    UserDetail,
    UserOut,
    UserPage,
)
from integration.errors import NotFound
from integration.inbound import erasure
from integration.openapi import Param, operation
from integration.store.models import AnonymousId, Company, Event, Membership, User
from integration.web import JSON

RECENT_EVENTS = 50


def user_view(u: User) -> UserOut:
    return UserOut.model_validate(u, from_attributes=True)


@operation(
    summary="List users, newest first; filter by trait value and last seen",
    response=UserPage,
    query=(
        Param("trait", "key:value; the trait's value as text equals value (repeatable)"),
        Param(
            "seen_since",
            "last seen at or after this ISO-8601 time",
            {"type": "string", "format": "date-time"},
        ),
        *PAGE_PARAMS,
    ),
)
async def list_users(request: Request) -> Response:
    size, cursor = pagination.limit(request), pagination.after_id(request)
    traits, seen_since = params.trait_filters(request), params.timestamp(request, "seen_since")
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        stmt = select(User).where(User.environment_id == env.id)
        for key, value in traits:
            stmt = stmt.where(User.traits[key].astext == value)
        if seen_since:
            stmt = stmt.where(User.last_seen_at >= seen_since)
        if cursor:
            stmt = stmt.where(User.id < cursor)
        rows = list(await session.scalars(stmt.order_by(User.id.desc()).limit(size + 1)))
    items = [user_view(u).model_dump(mode="json") for u in rows]
    return JSON(pagination.page(items, size, [rows[size - 1].id] if len(rows) > size else None))


async def _user(session: AsyncSession, env_id: Any, user_id: str) -> User:
    # Postgres text cannot hold NUL, so no such user can exist (and the query would fail).
    user = (
        None
        if "\x00" in user_id
        else await session.scalar(
            select(User).where(User.environment_id == env_id, User.user_id == user_id)
        )
    )
    if user is None:
        raise NotFound(f"no user {user_id!r} in this environment")
    return user


@operation(
    summary="A user with traits, anonymous ids, companies and recent events", response=UserDetail
)
async def read_user(request: Request) -> Response:
    user_id = request.path_params["user_id"]
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        user = await _user(session, env.id, user_id)
        anonymous = list(
            await session.scalars(
                select(AnonymousId.anonymous_id)
                .where(AnonymousId.environment_id == env.id, AnonymousId.user_id == user_id)
                .order_by(AnonymousId.anonymous_id)
            )
        )
        companies = list(
            await session.scalars(
                select(Company)
                .join(
                    Membership,
                    (Membership.environment_id == Company.environment_id)
                    & (Membership.group_id == Company.group_id),
                )
                .where(Membership.environment_id == env.id, Membership.user_id == user_id)
                .order_by(Company.group_id)
            )
        )
        events = list(
            await session.scalars(
                select(Event)
                .where(Event.environment_id == env.id, Event.user_id == user_id)
                .order_by(Event.timestamp.desc(), Event.id.desc())
                .limit(RECENT_EVENTS)
            )
        )
    detail = UserDetail(
        **user_view(user).model_dump(),
        anonymous_ids=anonymous,
        companies=[CompanyOut.model_validate(c, from_attributes=True) for c in companies],
        recent_events=[EventOut.model_validate(e, from_attributes=True) for e in events],
    )
    return JSON(detail.model_dump(mode="json"))


@operation(
    summary="Erase a user: profile, traits, anonymous ids, memberships, events and outbound "
    "messages (data-subject deletion, audited in /deletions)",
    response=UserDeleted,
)
async def delete_user(request: Request) -> Response:
    user_id = request.path_params["user_id"]
    async with unit_of_work(request) as session:
        env = await environment(session, request)
    erased = await erasure.erase_by_admin(request.app.state.engine, env.id, user_id)
    # Outbound messages are listed when there were some to erase.
    deleted = {k: v for k, v in erased.removed.items() if k != "outbox" or v}
    return JSON(UserDeleted(user_id=user_id, deleted=deleted).model_dump(mode="json"))


routes = [
    Route("/environments/{env_id}/users", list_users, methods=["GET"]),
    Route("/environments/{env_id}/users/{user_id}", read_user, methods=["GET"]),
    Route("/environments/{env_id}/users/{user_id}", delete_user, methods=["DELETE"]),
]
