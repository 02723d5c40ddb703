"""The delivery overview: outbox counts over the last hour and day, events in and out per
minute, the last batches with Segment's answers, and the dead letters, replayed one or all
through the same outbox.replay_filtered as the REST API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from starlette.responses import Response
from starlette.routing import Route

from integration.console import chart, ledger
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
from integration.inbound import queries
from integration.outbound import outbox
from integration.store.models import OutboxMessage

BATCHES_SHOWN = 20
DEAD_SHOWN = 50
REPLAYS_SHOWN = 10


def _dead_view(row: OutboxMessage) -> dict[str, object]:
    return {
        "id": row.id,
        "message_id": row.message_id,
        "type": row.type,
        "event": row.payload.get("event") or row.payload.get("name"),
        "attempts": row.attempts,
        "error": row.last_error,
        "status": row.response_status,
        "at": row.updated_at,
    }


@page
async def overview(request: ConsoleRequest) -> Response:
    now = datetime.now(UTC)
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=chart.MINUTES - 1)
    async with snapshot(request) as session:
        env = await environment(session, request)
        counts = await outbox.window_counts(session, env.id)
        inbound = await queries.arrivals_per_minute(session, env.id, start)
        outbound = await outbox.delivered_per_minute(session, env.id, start)
        batches = await outbox.recent_batches(session, env.id, BATCHES_SHOWN)
        dead = await outbox.list_deliveries(
            session, env.id, status="dead", before_id=None, limit=DEAD_SHOWN
        )
        book = await ledger.ledger(session, env)
        replays = await outbox.list_replays(session, env.id, before_id=None, limit=REPLAYS_SHOWN)
    replayed = request.query_params.get("replayed", "")
    received, delivered = chart.series(inbound, start), chart.series(outbound, start)
    return render(
        request,
        "deliveries.html",
        env=env,
        counts=counts,
        # The last hour and day of the chart's own series: one count of each kind.
        received_hour=sum(received[-60:]),
        received_day=sum(received),
        delivered_hour=sum(delivered[-60:]),
        delivered_day=sum(delivered),
        chart=chart.svg(received, delivered, start),
        batches=batches,
        dead=[_dead_view(r) for r in dead],
        replayed=int(replayed) if replayed.isdigit() else None,
        ledger=book,
        replays=replays,
    )


@page
async def replay(request: ConsoleRequest) -> Response:
    """One dead letter (`id`), or all of them (up to a replay's bound), recorded as any replay."""
    fields = await form(request)
    one = fields.get("id")
    if one is not None and not (one.isdigit() and len(one) <= 19):
        raise BadRequest("id must be a delivery's id")
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        chosen = outbox.ReplayFilter(ids=[int(one)] if one else None)
        done = await outbox.replay_filtered(session, env.id, chosen, dry_run=False, actor="console")
    return redirect(f"/environments/{env.id}/deliveries?replayed={done.queued}")


routes = [
    Route("/environments/{env_id}/deliveries", overview, methods=["GET"]),
    Route("/environments/{env_id}/deliveries/replay", replay, methods=["POST"]),
]
