"""/api/environments/{id}/deletions: the audit trail of erased people, newest first."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from integration.admin.common import AdminRequest, environment, unit_of_work
from integration.admin.schemas import DeletionOut, DeletionPage, UnmatchedDeletes
from integration.http import pagination
from integration.http.openapi import operation
from integration.http.pagination import PAGE_PARAMS
from integration.http.responses import JSON
from integration.inbound import queries


@operation(
    summary="List erasures (Segment deletes and admin deletions), newest first",
    response=DeletionPage,
    query=PAGE_PARAMS,
)
async def list_deletions(request: AdminRequest) -> Response:
    size, cursor = pagination.limit(request), pagination.after_id(request)
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        rows = await queries.list_deletions(session, env.id, before_id=cursor, limit=size + 1)
        unmatched = await queries.unmatched_deletes(session, env.id)
    items = [
        DeletionOut.model_validate(d, from_attributes=True).model_dump(mode="json") for d in rows
    ]
    last = pagination.last_shown(rows, size)
    found = pagination.page(items, size, [last.id] if last else None)
    found["unmatched"] = UnmatchedDeletes.model_validate(unmatched).model_dump(mode="json")
    return JSON(found)


routes = [Route("/environments/{env_id}/deletions", list_deletions, methods=["GET"])]
