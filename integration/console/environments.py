"""Environments: the list, creating one, and each one's settings, key rotation and test event.
Every change goes through the services the REST API calls (outbound.events for settings and
rotations, outbound.connection for the test event)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from starlette.responses import Response
from starlette.routing import Route

from integration.console.common import (
    ConsoleRequest,
    environment,
    form,
    page,
    redirect,
    render,
    unit_of_work,
)
from integration.environments import service as environments
from integration.environments.api_url import SEGMENT_API_URLS
from integration.environments.schemas import MAX_GRACE_SECONDS, EnvironmentSettings
from integration.errors import AppError, BadRequest
from integration.inbound import queries
from integration.outbound import breaker, events, outbox
from integration.outbound.connection import test_connection
from integration.store.models import Environment

# What the rotation form offers; the default (WEBHOOK_KEY_GRACE_SECONDS) comes first.
GRACE_CHOICES = {"1 hour": 3600, "1 week": 7 * 86400, "none: revoke the old key now": 0}
SAVED = {
    "segment": "Segment settings saved.",
    "stream": "Stream switched.",
    "signing": "Signing secret saved.",
    "company": "Company property saved.",
    "resumed": "Delivery resumed: the held events are on their way.",
    "not_paused": "Delivery was not paused.",
}


def duration(seconds: int) -> str:
    """24 hours, 1 week, 90 s: a grace period in words."""
    for unit, size in (("week", 7 * 86400), ("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return f"{seconds} s"


def region(api_url: str) -> str:
    """us, eu or custom: which of Segment's regions the URL is, if any."""
    for name, url in SEGMENT_API_URLS.items():
        if api_url == url:
            return name
    return "custom"


@page
async def list_environments(request: ConsoleRequest) -> Response:
    return await _list(request)


async def _list(request: ConsoleRequest, status_code: int = 200, **context: Any) -> Response:
    async with unit_of_work(request) as session:
        envs = await environments.list_all(session)
        ids = [e.id for e in envs]
        inbound = await queries.last_arrivals(session, ids)
        outbound = await outbox.last_deliveries(session, ids)
    rows = [
        {
            "env": environments.describe(e, request.state["box"]),
            "last_inbound": inbound.get(e.id),
            "last_outbound": outbound.get(e.id),
        }
        for e in envs
    ]
    return render(request, "environments.html", status_code, rows=rows, **context)


@page
async def create(request: ConsoleRequest) -> Response:
    fields = await form(request)
    try:
        async with unit_of_work(request) as session:
            created = await environments.create(session, fields.get("name", "").strip())
    except AppError as exc:
        return await _list(request, exc.status_code, error=exc.detail, name=fields.get("name"))
    return _show_key(request, created.environment, created.webhook_key, created=True)


def _show_key(
    request: ConsoleRequest, env: Environment, key: str, *, created: bool = False
) -> Response:
    """The webhook URL in full: on this page only, once (the key is stored hashed)."""
    return render(
        request,
        "webhook_url.html",
        env=environments.describe(env, request.state["box"]),
        webhook_url=request.state["settings"].webhook_url(key),
        created=created,
        previous_valid_until=env.previous_webhook_key_expires_at,
    )


@page
async def show(request: ConsoleRequest) -> Response:
    return await _show(request)


async def _show(request: ConsoleRequest, status_code: int = 200, **context: Any) -> Response:
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        delivery = await breaker.status(session, env.id)
    view = environments.describe(env, request.state["box"])
    default_grace = request.state["settings"].webhook_key_grace_seconds
    return render(
        request,
        "environment.html",
        status_code,
        env=view,
        delivery=delivery,
        region=region(env.segment_api_url),
        saved=SAVED.get(request.query_params.get("saved", "")),
        grace_choices={f"{duration(default_grace)} (the default)": default_grace, **GRACE_CHOICES},
        **context,
    )


def settings_changes(fields: dict[str, str]) -> dict[str, Any]:
    """The settings one of the page's forms changes (`what` names the form). A secret left
    blank is left as it is; an explicit clear sends '' (what clears it in the REST API)."""
    what = fields.get("what")
    changes: dict[str, Any] = {}
    if what == "segment":
        if fields.get("clear_write_key"):
            changes["segment_write_key"] = ""
        elif fields.get("write_key"):
            changes["segment_write_key"] = fields["write_key"]
        chosen = fields.get("region", "us")
        changes["segment_api_url"] = fields.get("custom_url", "") if chosen == "custom" else chosen
    elif what == "stream":
        changes["stream_enabled"] = fields.get("stream") == "on"
    elif what == "signing":
        if fields.get("action") == "clear":
            changes["webhook_signing_secret"] = ""
        else:
            changes["webhook_signing_secret"] = fields.get("signing_secret", "")
    elif what == "company":
        changes["company_property"] = fields.get("company_property", "").strip()
    else:
        raise BadRequest("the form names no setting")
    return changes


@page
async def change(request: ConsoleRequest) -> Response:
    fields = await form(request)
    changes = settings_changes(fields)
    if changes.get("webhook_signing_secret") == "" and fields.get("action") != "clear":
        return await _show(request, 400, error="Type the signing secret, or clear it.")
    try:
        # The same strict schema the REST API parses its body with.
        parsed = EnvironmentSettings.model_validate(changes).changes()
        async with unit_of_work(request) as session:
            env = await environment(session, request)
            if (
                parsed.get("segment_api_url")
                and region(env.segment_api_url) == parsed["segment_api_url"]
            ):
                del parsed["segment_api_url"]  # the region it already has: not a change
            await events.change_settings(
                session,
                env,
                request.state["box"],
                parsed,
                allowlist=request.state["settings"].segment_api_hosts,
            )
    except ValidationError as exc:
        return await _show(request, 400, error=str(exc.errors()[0]["msg"]))
    except AppError as exc:
        return await _show(request, exc.status_code, error=exc.detail)
    return redirect(f"/environments/{env.id}?saved={fields['what']}")


@page
async def rotate(request: ConsoleRequest) -> Response:
    fields = await form(request)
    raw = fields.get("grace_seconds", "")
    if not raw.isdigit() or int(raw) > MAX_GRACE_SECONDS:
        return await _show(request, 400, error="Choose how long the old key keeps working.")
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        key = await events.rotate_webhook_key(session, env, grace_seconds=int(raw))
        await session.refresh(env)
    return _show_key(request, env, key)


@page
async def send_test_event(request: ConsoleRequest) -> Response:
    await form(request)
    async with unit_of_work(request) as session:
        env = await environment(session, request)
    state = request.state
    result = await test_connection(env, state["box"], state["http"], state["settings"])
    return await _show(request, test=result)


@page
async def resume_delivery(request: ConsoleRequest) -> Response:
    """The banner's button: resume a delivery the breaker paused."""
    await form(request)
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        resumed = await breaker.resume(session, env.id, by="console")
    return redirect(f"/environments/{env.id}?saved={'resumed' if resumed else 'not_paused'}")


routes = [
    Route("/", list_environments, methods=["GET"]),
    Route("/environments", create, methods=["POST"]),
    Route("/environments/{env_id}", show, methods=["GET"]),
    Route("/environments/{env_id}/settings", change, methods=["POST"]),
    Route("/environments/{env_id}/rotate", rotate, methods=["POST"]),
    Route("/environments/{env_id}/test", send_test_event, methods=["POST"]),
    Route("/environments/{env_id}/resume", resume_delivery, methods=["POST"]),
]
