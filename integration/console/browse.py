"""Browse an environment's users, companies and events (search by id or email trait, keyset
pages), a user's page (with their identity: links, merges and conflicts) and a company's page,
and erasing a user after a confirmation step. Reads come from inbound.queries and the erasure
from inbound.erasure, as in the REST API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.responses import Response
from starlette.routing import Route

from integration.console.common import (
    ConsoleRequest,
    environment,
    form,
    page,
    render,
    unit_of_work,
)
from integration.errors import BadRequest
from integration.http.pagination import last_shown
from integration.inbound import erasure, queries
from integration.inbound.digests import InstallKey
from integration.spec import MAX_TEXT_CHARS
from integration.store.models import IdentityLog

PAGE_SIZE = 50


def _text(request: ConsoleRequest, name: str) -> str | None:
    value = request.query_params.get(name, "").strip()
    if "\x00" in value or len(value) > MAX_TEXT_CHARS:
        raise BadRequest(f"{name} must be at most {MAX_TEXT_CHARS} characters")
    return value or None


def _before_id(request: ConsoleRequest) -> int | None:
    raw = request.query_params.get("before", "")
    if not raw:
        return None
    if not raw.isdigit() or len(raw) > 19:
        raise BadRequest("before must be a row id from the previous page")
    return int(raw)


@page
async def users(request: ConsoleRequest) -> Response:
    search, before = _text(request, "q"), _before_id(request)
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        rows = await queries.list_users(
            session,
            env.id,
            traits=[],
            seen_since=None,
            before_id=before,
            limit=PAGE_SIZE + 1,
            search=search,
        )
    last = last_shown(rows, PAGE_SIZE)
    return render(
        request,
        "users.html",
        env=env,
        users=rows[:PAGE_SIZE],
        q=search or "",
        next_before=last.id if last else None,
    )


@page
async def user(request: ConsoleRequest) -> Response:
    user_id = _text(request, "id")
    if not user_id:
        raise BadRequest("give the userId as ?id=")
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        found = await queries.user_detail(session, env.id, user_id)
        linked = await queries.identity(session, env.id, user_id)
    done = request.query_params.get("done", "")
    return render(
        request,
        "user.html",
        env=env,
        detail=found,
        traits=_traits(found.user),
        identity=linked,
        done=done if done in ("applied", "dismissed") else None,
        undoable=_newest_merges(linked),
        unmerged=_unmerged(request, linked),
    )


def _newest_merges(linked: queries.FoundIdentity) -> set[int]:
    """The log ids that get an Unmerge button: the newest merge of each id into the user, as
    unmerge takes back the newest (an older row's button would undo another merge)."""
    newest: dict[str, int] = {}
    for row in linked.merges_in:  # newest first
        if row.kind == "merge":
            newest.setdefault(row.from_id, row.id)
    return set(newest.values())


def _unmerged(request: ConsoleRequest, linked: queries.FoundIdentity) -> IdentityLog | None:
    """The merge an unmerge from this page just took back (?unmerged=its log id), for the
    flash: what it put back is on its row."""
    raw = request.query_params.get("unmerged", "")
    if not raw.isdigit() or len(raw) > 19:
        return None
    return next((r for r in linked.merges_in if r.id == int(raw) and r.undone_at), None)


def _traits(profile: Any) -> list[tuple[str, Any, datetime | None]]:
    """Each trait with the message time it was last set with (kept as epoch seconds)."""
    times = profile.trait_times or {}
    out = []
    for key, value in sorted(profile.traits.items()):
        at = times.get(key)
        when = datetime.fromtimestamp(at, UTC) if isinstance(at, int | float) else None
        out.append((key, value, when))
    return out


@page
async def confirm_erase(request: ConsoleRequest) -> Response:
    user_id = _text(request, "id")
    if not user_id:
        raise BadRequest("give the userId as ?id=")
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        found = await queries.user_detail(session, env.id, user_id)
    return render(request, "erase.html", env=env, detail=found)


@page
async def erase(request: ConsoleRequest) -> Response:
    fields = await form(request)
    user_id = fields.get("id", "")
    if not user_id:
        raise BadRequest("type the userId again to confirm the erasure")
    typed = fields.get("confirm", "")
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        if typed != user_id:
            # The form again, with what was typed and what is wrong with it: not a dead end.
            found = await queries.user_detail(session, env.id, user_id)
            return render(
                request,
                "erase.html",
                400,
                env=env,
                detail=found,
                typed=typed,
                error=_mismatch(typed, user_id),
            )
    key = InstallKey.of(request.state["settings"])
    erased = await erasure.erase_by_admin(request.state["engine"], env.id, user_id, key)
    return render(request, "erased.html", env=env, user_id=user_id, removed=erased.removed)


def _mismatch(typed: str, user_id: str) -> str:
    """What is wrong with a mistyped confirmation, as plainly as it can be said."""
    if not typed:
        return "Nothing was typed: type the userId to confirm. Nothing was erased."
    if typed.strip() == user_id:
        why = "it has spaces before or after it"
    elif typed.casefold() == user_id.casefold():
        why = "the capitals differ (userIds are case-sensitive)"
    else:
        why = "it is not this user's userId"
    return f"“{typed}” does not match: {why}. Type the userId exactly. Nothing was erased."


@page
async def companies(request: ConsoleRequest) -> Response:
    search, before = _text(request, "q"), _before_id(request)
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        rows = await queries.list_companies(
            session, env.id, traits=[], before_id=before, limit=PAGE_SIZE + 1, search=search
        )
    last = last_shown(rows, PAGE_SIZE)
    return render(
        request,
        "companies.html",
        env=env,
        companies=rows[:PAGE_SIZE],
        q=search or "",
        next_before=last.id if last else None,
    )


@page
async def company(request: ConsoleRequest) -> Response:
    group_id = _text(request, "id")
    if not group_id:
        raise BadRequest("give the groupId as ?id=")
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        found = await queries.company_detail(session, env.id, group_id)
    return render(request, "company.html", env=env, detail=found, traits=_traits(found.company))


def _event_cursor(request: ConsoleRequest) -> tuple[datetime, int] | None:
    raw = request.query_params.get("before", "")
    if not raw:
        return None
    at, _, last = raw.rpartition("~")
    try:
        when = datetime.fromisoformat(at)
    except ValueError:
        raise BadRequest("before must come from the previous page") from None
    if not last.isdigit() or len(last) > 19 or when.tzinfo is None:
        raise BadRequest("before must come from the previous page")
    return when, int(last)


@page
async def event_list(request: ConsoleRequest) -> Response:
    search = _text(request, "q")
    filters = queries.EventFilters(
        user_id=search, type=_text(request, "type"), name=_text(request, "name")
    )
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        rows = await queries.list_events(
            session, env.id, filters, before=_event_cursor(request), limit=PAGE_SIZE + 1
        )
    last = last_shown(rows, PAGE_SIZE)
    return render(
        request,
        "events.html",
        env=env,
        events=rows[:PAGE_SIZE],
        q=search or "",
        type=filters.type or "",
        name=filters.name or "",
        next_before=f"{last.timestamp.isoformat()}~{last.id}" if last else None,
    )


routes = [
    Route("/environments/{env_id}/users", users, methods=["GET"]),
    Route("/environments/{env_id}/user", user, methods=["GET"]),
    Route("/environments/{env_id}/user/erase", confirm_erase, methods=["GET"]),
    Route("/environments/{env_id}/user/erase", erase, methods=["POST"]),
    Route("/environments/{env_id}/companies", companies, methods=["GET"]),
    Route("/environments/{env_id}/company", company, methods=["GET"]),
    Route("/environments/{env_id}/events", event_list, methods=["GET"]),
]
