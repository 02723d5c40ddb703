"""/api/environments/{id}/stats: what an operator checks first."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response
from starlette.routing import Route

from integration.admin.common import AdminRequest, environment, unit_of_work
from integration.admin.schemas import Stats
from integration.http.openapi import operation
from integration.http.responses import JSON
from integration.inbound import queries
from integration.outbound import outbox


async def collect(session: AsyncSession, env_id: uuid.UUID) -> Stats:
    """The environment's counts, inbound and outbound (the CLI's `stats` reads them too)."""
    inbound = await queries.activity(session, env_id)
    outbound = await outbox.counts(session, env_id)
    return Stats(**inbound, **outbound)


@operation(
    summary="Counts and last activity times, inbound and outbound", response=Stats, scope="read"
)
async def stats(request: AdminRequest) -> Response:
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        found = await collect(session, env.id)
    return JSON(found.model_dump(mode="json"))


routes = [Route("/environments/{env_id}/stats", stats, methods=["GET"])]
