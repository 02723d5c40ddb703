"""/api/environments/{id}/stats: what an operator checks first."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from integration.admin.common import AdminRequest, environment, unit_of_work
from integration.admin.schemas import Stats
from integration.http.openapi import operation
from integration.http.responses import JSON
from integration.inbound import queries
from integration.outbound import outbox


@operation(summary="Counts and last activity times, inbound and outbound", response=Stats)
async def stats(request: AdminRequest) -> Response:
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        inbound = await queries.activity(session, env.id)
        outbound = await outbox.counts(session, env.id)
    return JSON(Stats(**inbound, **outbound).model_dump(mode="json"))


routes = [Route("/environments/{env_id}/stats", stats, methods=["GET"])]
