"""The tracking plan in force per direction with its violations (by event, property and rule,
with counts and a sample), and the quarantine: its messages with their violations, released
or discarded one by one or by filter, through the same services as the REST API."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response
from starlette.routing import Route

from integration.console.common import (
    ConsoleRequest,
    environment,
    form,
    page,
    redirect,
    render,
    snapshot,
    unit_of_work,
)
from integration.errors import BadRequest
from integration.inbound import planned
from integration.inbound.digests import InstallKey
from integration.outbound.publish import publish_released
from integration.plans import quarantine, violations
from integration.plans import service as plans
from integration.plans.document import DIRECTIONS
from integration.store.models import Environment, Quarantined

ACTOR = "console"
LISTED = 100
DONE = {"release": "released", "discard": "discarded"}


@page
async def plan(request: ConsoleRequest) -> Response:
    async with snapshot(request) as session:
        env = await environment(session, request)
        shown = [
            {
                "direction": way,
                "version": await plans.current(session, env.id, way),
                "violations": await violations.summary(session, env.id, way),
            }
            for way in DIRECTIONS
        ]
    return render(request, "plan.html", env=env, tab="plan", directions=shown)


def _filter(fields: dict[str, str]) -> quarantine.Filter:
    """A row's id, else the filter the page was showing (empty fields: any)."""
    one = fields.get("id", "")
    if one and not (one.isdigit() and len(one) <= 19):
        raise BadRequest("id must be a quarantined message's id")
    way = fields.get("direction") or None
    if way is not None and way not in DIRECTIONS:
        raise BadRequest("direction must be inbound or outbound")
    return quarantine.Filter(
        ids=[int(one)] if one else None,
        direction=way,
        event=fields.get("event") or None,
        type=fields.get("type") or None,
    )


@page
async def listing(request: ConsoleRequest) -> Response:
    chosen = _filter({k: request.query_params.get(k, "") for k in ("direction", "event")})
    async with snapshot(request) as session:
        env = await environment(session, request)
        rows = await quarantine.listing(session, env.id, chosen, before_id=None, limit=LISTED)
    done = request.query_params.get("done", "")
    return render(
        request,
        "quarantine.html",
        env=env,
        tab="quarantine",
        rows=rows,
        chosen=chosen,
        done=done if done in ("released", "discarded") else None,
        count=len(rows),
    )


def _store_or_send(session: AsyncSession, env: Environment, key: InstallKey) -> quarantine.Deliver:
    """Where a released message goes, as the REST API's release sends it (past the plan)."""

    async def deliver(direction: str, rows: list[Quarantined]) -> None:
        if direction == "outbound":
            await publish_released(session, env, [dict(r.message) for r in rows])
            return
        pg = (await (await session.connection()).get_raw_connection()).driver_connection
        await planned.store_released(pg, env, rows, key)

    return deliver


@page
async def act(request: ConsoleRequest) -> Response:
    """Release or discard (the path's last part) one row, or every row the filter shows."""
    fields = await form(request)
    action = request.url.path.rsplit("/", 1)[-1]
    chosen = _filter(fields)
    key = InstallKey.of(request.state["settings"])
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        picked = await quarantine.pick(session, env.id, chosen)
        if action == "release":
            deliver = _store_or_send(session, env, key)
            await quarantine.release(session, env.id, picked.rows, deliver, actor=ACTOR)
        else:
            await quarantine.discard(session, picked.rows, actor=ACTOR)
    return redirect(f"/environments/{env.id}/quarantine?done={DONE[action]}")


routes = [
    Route("/environments/{env_id}/plan", plan, methods=["GET"]),
    Route("/environments/{env_id}/quarantine", listing, methods=["GET"]),
    Route("/environments/{env_id}/quarantine/release", act, methods=["POST"]),
    Route("/environments/{env_id}/quarantine/discard", act, methods=["POST"]),
]
