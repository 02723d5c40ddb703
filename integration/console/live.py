"""The live inbound view: the last messages an environment received, stored or not, newest
first; the page polls for new rows while it is open. A stored message opens to its JSON."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

import orjson
from starlette.responses import Response
from starlette.routing import Route

from integration.console.common import (
    ConsoleRequest,
    environment,
    page,
    redirect,
    render,
    unit_of_work,
)
from integration.errors import BadRequest, NotFound
from integration.inbound import live, queries
from integration.store.events import blocked_user_id
from integration.store.models import Environment, Event

POLL_SECONDS = 2


@dataclass(frozen=True, slots=True)
class Row:
    at: datetime
    outcome: str  # stored, duplicate or rejected
    type: str | None
    name: str | None
    user: str | None
    company: str | None
    reason: str
    href: str | None  # the stored JSON's page
    raw: str | None  # what was sent, for a rejected message this process kept


def _stored(env_prefix: str, e: Event) -> Row:
    blocked = blocked_user_id(e.user_id, e.extra)
    return Row(
        e.created_at,
        "stored",
        e.type,
        e.name,
        e.user_id or e.anonymous_id,
        e.group_id,
        "; ".join(
            reason
            for reason in (
                f"userId {blocked!r} is a blocked id: stored as anonymous"
                if blocked is not None
                else "",
                f"stored unmapped: {e.mapping_error}" if e.mapping_error else "",
            )
            if reason
        ),
        f"{env_prefix}/events/{e.id}",
        None,
    )


def _not_stored(env_prefix: str, s: live.Seen) -> Row:
    href = None
    if s.outcome == live.DUPLICATE and s.message_id:
        href = f"{env_prefix}/message?id={quote(s.message_id, safe='')}"
    raw = orjson.dumps(orjson.loads(s.raw), option=orjson.OPT_INDENT_2).decode() if s.raw else None
    return Row(s.at, s.outcome, s.type, s.name, s.user_id, s.company, s.reason, href, raw)


async def rows(request: ConsoleRequest) -> tuple[list[Row], Environment]:
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        stored = await queries.arrivals(session, env.id)
    prefix = f"/environments/{env.id}"
    merged = [_stored(prefix, e) for e in stored] + [
        _not_stored(prefix, s) for s in request.state["live"].recent(env.id)
    ]
    merged.sort(key=lambda r: r.at, reverse=True)
    return merged[: queries.LIVE_MESSAGES], env


@page
async def live_view(request: ConsoleRequest) -> Response:
    found, env = await rows(request)
    return render(request, "live.html", env=env, rows=found, poll_seconds=POLL_SECONDS)


@page
async def live_rows(request: ConsoleRequest) -> Response:
    """The table's rows alone: what the page fetches while it is open."""
    found, env = await rows(request)
    return render(request, "live_rows.html", env=env, rows=found)


@page
async def show_event(request: ConsoleRequest) -> Response:
    raw = request.path_params["event_id"]
    if not raw.isdigit() or len(raw) > 19:
        raise NotFound("no such event in this environment")
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        event = await queries.event(session, env.id, int(raw))
    return render(
        request, "event.html", env=env, event=event, message=queries.stored_message(event)
    )


@page
async def by_message_id(request: ConsoleRequest) -> Response:
    """A duplicate's stored original, found by its messageId."""
    message_id = request.query_params.get("id", "")
    if not message_id:
        raise BadRequest("give the messageId as ?id=")
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        found = await queries.event_id_of(session, env.id, message_id)
    if found is None:
        raise NotFound("no stored message with this messageId (it may have been erased)")
    return redirect(f"/environments/{env.id}/events/{found}")


routes = [
    Route("/environments/{env_id}/live", live_view, methods=["GET"]),
    Route("/environments/{env_id}/live/rows", live_rows, methods=["GET"]),
    Route("/environments/{env_id}/events/{event_id}", show_event, methods=["GET"]),
    Route("/environments/{env_id}/message", by_message_id, methods=["GET"]),
]
