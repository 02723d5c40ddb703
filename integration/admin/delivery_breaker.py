"""/api/environments/{id}/delivery: whether the environment's delivery breaker paused it, and
the operator's word to resume (integration/outbound/breaker.py)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime

from pydantic import BaseModel
from starlette.responses import Response
from starlette.routing import Route

from integration.admin.common import AdminRequest, environment, unit_of_work
from integration.http.openapi import operation
from integration.http.responses import JSON
from integration.outbound import breaker


class DeliveryState(BaseModel):
    paused: bool
    paused_at: datetime | None
    failing_since: datetime | None
    next_probe_at: datetime | None
    last_error: str | None
    resumed_at: datetime | None
    resumed_by: str | None


class Resumed(BaseModel):
    resumed: bool


@operation(
    summary="The environment's delivery breaker: paused or not, failing since when",
    scope="read",
    response=DeliveryState,
)
async def delivery_state(request: AdminRequest) -> Response:
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        state = await breaker.status(session, env.id)
    return JSON(DeliveryState(**asdict(state)).model_dump(mode="json"))


@operation(
    summary="Resume an environment's delivery that its breaker paused",
    response=Resumed,
)
async def resume(request: AdminRequest) -> Response:
    """Held rows go at once; `resumed` is false when delivery was not paused."""
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        resumed = await breaker.resume(session, env.id, by="api")
    return JSON(Resumed(resumed=resumed).model_dump(mode="json"))


routes = [
    Route("/environments/{env_id}/delivery", delivery_state, methods=["GET"]),
    Route("/environments/{env_id}/delivery/resume", resume, methods=["POST"]),
]
