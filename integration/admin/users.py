"""/api/environments/{id}/users: browse users, read one with everything about them, delete one."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from integration.admin import params
from integration.admin.common import AdminRequest, environment, parse_body, unit_of_work
from integration.admin.conflicts import ACTOR
from integration.admin.schemas import (
    IdentityOut,
    UnmergeOut,
    UnmergeRequest,
    UserDeleted,
    UserDetail,
    UserOut,
    UserPage,
)
from integration.http import pagination
from integration.http.openapi import Param, operation
from integration.http.pagination import PAGE_PARAMS
from integration.http.responses import JSON
from integration.inbound import erasure, queries, unmerge
from integration.inbound.digests import InstallKey
from integration.store.models import User


def user_view(u: User) -> UserOut:
    return UserOut.model_validate(u, from_attributes=True)


@operation(
    summary="List users, newest first; filter by trait value and last seen",
    scope="read",
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
async def list_users(request: AdminRequest) -> Response:
    size, cursor = pagination.limit(request), pagination.after_id(request)
    traits, seen_since = params.trait_filters(request), params.timestamp(request, "seen_since")
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        rows = await queries.list_users(
            session, env.id, traits=traits, seen_since=seen_since, before_id=cursor, limit=size + 1
        )
    items = [user_view(u).model_dump(mode="json") for u in rows]
    last = pagination.last_shown(rows, size)
    return JSON(pagination.page(items, size, [last.id] if last else None))


@operation(
    summary="A user with traits, anonymous ids, companies and recent events",
    response=UserDetail,
    scope="read",
)
async def read_user(request: AdminRequest) -> Response:
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        found = await queries.user_detail(session, env.id, request.path_params["user_id"])
    return JSON(UserDetail.of(found).model_dump(mode="json"))


@operation(
    summary="A user's identity: the anonymous ids linked to them, the links and merges into and"
    " out of them (the merge log), and the conflicts naming them",
    response=IdentityOut,
    scope="read",
)
async def read_identity(request: AdminRequest) -> Response:
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        found = await queries.identity(session, env.id, request.path_params["user_id"])
    return JSON(IdentityOut.of(found).model_dump(mode="json"))


@operation(
    summary="Unmerge: take back the newest merge of merged_id into this user. The events, anonymous"
    " ids, memberships and traits it moved go back to merged_id's own profile; a trait set by a"
    " later message stays. Undone already: the same answer, already_undone true",
    body=UnmergeRequest,
    response=UnmergeOut,
    errors=(401, 404, 409, 413),
)
async def unmerge_user(request: AdminRequest) -> Response:
    body = await parse_body(request, UnmergeRequest)
    user_id = request.path_params["user_id"]
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        done = await unmerge.unmerge(session, env.id, user_id, body.merged_id, ACTOR)
    answer = UnmergeOut(
        user_id=user_id,
        merged_id=body.merged_id,
        merge_id=done.merge_id,
        undone_at=done.undone_at,
        already_undone=done.already_undone,
        restored=done.restored,
    )
    return JSON(answer.model_dump(mode="json"))


@operation(
    summary="Erase a user: profile, traits, anonymous ids, memberships, events and outbound "
    "messages (data-subject deletion, audited in /deletions)",
    response=UserDeleted,
)
async def delete_user(request: AdminRequest) -> Response:
    user_id = request.path_params["user_id"]
    async with unit_of_work(request) as session:
        env = await environment(session, request)
    key = InstallKey.of(request.state["settings"])
    erased = await erasure.erase_by_admin(request.state["engine"], env.id, user_id, key)
    return JSON(UserDeleted(user_id=user_id, deleted=erased.reported).model_dump(mode="json"))


routes = [
    Route("/environments/{env_id}/users", list_users, methods=["GET"]),
    Route("/environments/{env_id}/users/{user_id}", read_user, methods=["GET"]),
    Route("/environments/{env_id}/users/{user_id}/identity", read_identity, methods=["GET"]),
    Route("/environments/{env_id}/users/{user_id}/unmerge", unmerge_user, methods=["POST"]),
    Route("/environments/{env_id}/users/{user_id}", delete_user, methods=["DELETE"]),
]
