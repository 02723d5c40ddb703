"""The ledger on the delivery overview, the trace of a message, and replay by filter with a
dry run first: the same functions the admin API and the CLI call."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

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
from integration.errors import BadRequest, NotFound
from integration.inbound import queries
from integration.outbound import outbox
from integration.plans import quarantine
from integration.store import activity
from integration.store.models import Environment

BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)
END = datetime(9999, 1, 1, tzinfo=UTC)
FILTER_FIELDS = ("status", "from", "to", "event", "type", "user_id")


def _streaming(env: Environment) -> bool:
    return env.stream_enabled and env.segment_write_key is not None


async def ledger(session: AsyncSession, env: Environment) -> dict[str, Any]:
    """The environment's ledger over all time, both directions."""
    inbound = await activity.inbound_ledger(session, env.id, BEGINNING, END)
    outbound = await outbox.ledger(
        session, env.id, since=BEGINNING, until=END, streaming=_streaming(env)
    )
    return {"inbound": inbound, "outbound": outbound.as_dict()}


@page
async def trace(request: ConsoleRequest) -> Response:
    message_id = (request.query_params.get("message_id") or "").strip()
    async with snapshot(request) as session:
        env = await environment(session, request)
        steps: list[dict[str, Any]] = []
        states: dict[str, str] = {}
        if message_id and "\x00" not in message_id:
            found = await queries.inbound_trace(session, env.id, message_id)
            if found is not None:
                steps += queries.inbound_steps(found)
                states["inbound"] = "stored"
            sent = await outbox.trace(session, env.id, message_id)
            if sent is not None:
                more, states["outbound"] = outbox.outbound_steps(sent, streaming=_streaming(env))
                steps += more
            for row in await quarantine.trace(session, env.id, message_id):
                held, state = quarantine.steps(row)
                steps[:0] = held  # first: a release and its store share a time
                if state is not None:
                    states.setdefault(row.direction, state)
    if message_id and not states:
        raise NotFound(f"no message with the messageId {message_id!r} is held here")
    steps.sort(key=lambda s: s["at"] or "")
    return render(request, "trace.html", env=env, message_id=message_id, states=states, steps=steps)


def _when(value: str, name: str) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name} must be a date and time such as 2026-12-07T14:00") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _filter(fields: dict[str, str]) -> outbox.ReplayFilter:
    status = fields.get("status") or "dead"
    if status not in outbox.REPLAYABLE:
        raise BadRequest("status must be dead or delivered")
    for name in FILTER_FIELDS:
        if "\x00" in fields.get(name, "") or len(fields.get(name, "")) > 2048:
            raise BadRequest(f"{name} is too long or holds a NUL")
    return outbox.ReplayFilter(
        status=status,
        since=_when(fields.get("from", ""), "from"),
        until=_when(fields.get("to", ""), "to"),
        event=fields.get("event") or None,
        type=fields.get("type") or None,
        user_id=fields.get("user_id") or None,
    )


@page
async def replay(request: ConsoleRequest) -> Response:
    """A filter's dry run (the count and a sample, with a button to replay exactly that), or
    the replay itself."""
    fields = await form(request)
    chosen = _filter(fields)
    dry_run = fields.get("dry_run") == "1"
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        done = await outbox.replay_filtered(
            session, env.id, chosen, dry_run=dry_run, actor="console"
        )
    if not dry_run:
        return redirect(f"/environments/{env.id}/deliveries?replayed={done.queued}")
    return render(
        request,
        "replay_preview.html",
        env=env,
        done=done,
        fields={name: fields.get(name, "") for name in FILTER_FIELDS},
    )


routes = [
    Route("/environments/{env_id}/trace", trace, methods=["GET"]),
    Route("/environments/{env_id}/deliveries/replay-filter", replay, methods=["POST"]),
]
