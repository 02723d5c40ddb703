"""/api/environments/{id}/stats: what an operator checks first."""

from __future__ import annotations

from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from integration.admin.common import environment, unit_of_work
from integration.admin.schemas import Stats
from integration.openapi import operation
from integration.web import JSON

STATS = text("""
SELECT
  (SELECT count(*) FROM users WHERE environment_id = :env) AS users,
  (SELECT count(*) FROM companies WHERE environment_id = :env) AS companies,
  (SELECT count(*) FROM events WHERE environment_id = :env) AS events_total,
  (SELECT count(*) FROM events WHERE environment_id = :env
      AND created_at >= now() - interval '1 hour') AS events_last_hour,
  (SELECT count(*) FROM events WHERE environment_id = :env
      AND created_at >= now() - interval '1 day') AS events_last_day,
  (SELECT max(created_at) FROM events WHERE environment_id = :env) AS last_inbound_at,
  (SELECT count(*) FROM outbox WHERE environment_id = :env AND status = 'pending')
      AS outbound_pending,
  (SELECT count(*) FROM outbox WHERE environment_id = :env AND status = 'delivered')
      AS outbound_delivered,
  (SELECT count(*) FROM outbox WHERE environment_id = :env AND status = 'dead')
      AS outbound_dead,
  (SELECT max(delivered_at) FROM outbox WHERE environment_id = :env) AS last_outbound_at
""")


@operation(summary="Counts and last activity times, inbound and outbound", response=Stats)
async def stats(request: Request) -> Response:
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        row = (await session.execute(STATS, {"env": env.id})).mappings().one()
    return JSON(Stats(**row).model_dump(mode="json"))


routes = [Route("/environments/{env_id}/stats", stats, methods=["GET"])]
