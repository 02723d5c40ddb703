"""Environments: the list, creating one, and each one's settings, key rotation and test event.
Every change goes through the services the REST API calls (outbound.events for settings and
rotations, outbound.connection for the test event)."""

from __future__ import annotations

import re
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

# What the console calls each kind of key (environments.service.KEY_NAMES, capitalised).
KEY_LABELS = {"webhook": "Webhook key", "source_write": "Intake write key"}
# What the rotation form offers; the default (WEBHOOK_KEY_GRACE_SECONDS) comes first.
GRACE_CHOICES = {"1 hour": 3600, "1 week": 7 * 86400, "none: revoke the old key now": 0}
SAVED = {
    "segment": "Segment settings saved.",
    "stream": "Stream switched.",
    "signing": "Signing secret saved.",
    "company": "Company property saved.",
    "copies": "Store outbound events saved.",
    "cors": "Browser origins saved.",
    "retention": "Retention saved.",
    "identity": "Identity rules saved.",
    "resumed": "Delivery resumed: the held events are on their way.",
    "not_paused": "Delivery was not paused.",
}
# The console's label for each setting the REST API names by its field: what its error
# messages say instead of the field name.
LABELS = {
    "segment_write_key": "Segment write key",
    "webhook_signing_secret": "Signing secret",
    "stream_enabled": "Stream",
    "company_property": "Company property",
    "segment_api_url": "Segment API URL",
    "store_outbound_events": "Store outbound events",
    "cors_allowed_origins": "Browser origins",
    "retention_days": "Keep events for (days)",
    "blocked_ids": "Blocked ids",
    "max_anonymous_ids_per_user": "Anonymous ids per user",
    "allow_identified_merges": "Merge identified users",
    "source_write_key": "Intake write key",
    "grace_seconds": "Old key keeps working for",
}
FIELD_NAME = re.compile(r"\b(" + "|".join(LABELS) + r")\b")


def in_console_words(detail: str) -> str:
    """An error of the shared services, with the console's labels for the API's field names
    ("segment_write_key must be ..." reads "Segment write key must be ...")."""
    worded = FIELD_NAME.sub(lambda m: LABELS[m.group(1)], detail)
    return worded[:1].upper() + worded[1:]


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
        previous = await environments.previous_keys(session, ids)
    rows = [
        {
            "env": environments.describe(e, request.state["box"], previous=previous[e.id]),
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
    return _show_key(
        request,
        created.environment,
        environments.Rotated(created.webhook_key, None),
        source_write_key=created.source_write_key,
    )


def _show_key(
    request: ConsoleRequest,
    env: Environment,
    rotated: environments.Rotated,
    *,
    source_write_key: str | None = None,
) -> Response:
    """The webhook URL in full (and, on creation, the intake write key): on this page only,
    once (the keys are stored hashed)."""
    return render(
        request,
        "webhook_url.html",
        env=env,
        webhook_url=request.state["settings"].webhook_url(rotated.key),
        created=source_write_key is not None,
        source_write_key=source_write_key,
        tracking_host=request.state["settings"].public_base_url,
        previous_valid_until=rotated.replaced_until,
    )


@page
async def show(request: ConsoleRequest) -> Response:
    return await _show(request)


async def _show(request: ConsoleRequest, status_code: int = 200, **context: Any) -> Response:
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        previous = (await environments.previous_keys(session, [env.id]))[env.id]
        delivery = await breaker.status(session, env.id)
    view = environments.describe(env, request.state["box"], previous=previous)
    settings = request.state["settings"]
    context.setdefault("cors_origins", None)
    context.setdefault("retention", None)
    return render(
        request,
        "environment.html",
        status_code,
        env=view,
        delivery=delivery,
        region=region(env.segment_api_url),
        saved=SAVED.get(request.query_params.get("saved", "")),
        grace_choices=_grace_choices(settings.webhook_key_grace_seconds),
        intake_grace_choices=_grace_choices(settings.source_write_key_grace_seconds),
        tracking_host=settings.public_base_url,
        **context,
    )


def _grace_choices(default: int) -> dict[str, int]:
    return {f"{duration(default)} (the default)": default, **GRACE_CHOICES}


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
    elif what == "copies":
        changes["store_outbound_events"] = fields.get("store_outbound_events") == "on"
    elif what == "cors":
        lines = fields.get("cors_origins", "").splitlines()
        changes["cors_allowed_origins"] = [o.strip() for o in lines if o.strip()]
    elif what == "retention":
        changes["retention_days"] = _retention(fields.get("retention_days", ""))
    elif what == "identity":
        changes.update(_identity_rules(fields))
    else:
        raise BadRequest("the form names no setting")
    return changes


def _identity_rules(fields: dict[str, str]) -> dict[str, Any]:
    """The identity form: blocked ids one per line (or back to the default list), the limit of
    anonymous ids per user, and whether identified users may be merged."""
    lines = fields.get("blocked_ids", "").splitlines()
    limit = fields.get("max_anonymous_ids_per_user", "").strip()
    if not limit.isascii() or not limit.isdigit():
        raise BadRequest(f"{LABELS['max_anonymous_ids_per_user']} must be a whole number")
    return {
        "blocked_ids": (
            None if fields.get("action") == "default" else [i.strip() for i in lines if i.strip()]
        ),
        "max_anonymous_ids_per_user": int(limit),
        "allow_identified_merges": fields.get("allow_identified_merges") == "on",
    }


def _retention(value: str) -> int | None:
    """Days as typed: blank keeps events forever."""
    value = value.strip()
    if not value or value.lower() == "forever":
        return None
    if not value.isascii() or not value.isdigit():
        raise BadRequest(
            f"{LABELS['retention_days']} must be a whole number of days from 1 to"
            f" {environments.MAX_RETENTION_DAYS}, or empty to keep events forever"
        )
    return int(value)


@page
async def change(request: ConsoleRequest) -> Response:
    fields = await form(request)
    # What was typed stays in the form when it is refused, to be corrected, not retyped.
    typed = {"cors_origins": fields.get("cors_origins"), "retention": fields.get("retention_days")}
    try:
        changes = settings_changes(fields)
    except AppError as exc:
        return await _show(request, exc.status_code, error=exc.detail, **typed)
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
        first = exc.errors()[0]
        label = LABELS.get(str(first["loc"][0]), "") if first["loc"] else ""
        message = f"{label}: {first['msg']}" if label else str(first["msg"])
        return await _show(request, 400, error=message, **typed)
    except AppError as exc:
        return await _show(request, exc.status_code, error=in_console_words(exc.detail), **typed)
    return redirect(f"/environments/{env.id}?saved={fields['what']}")


def _rotation_choice(fields: dict[str, str]) -> tuple[int, bool] | None:
    """A rotation form's grace and whether to end earlier keys early; None for no valid grace."""
    raw = fields.get("grace_seconds", "")
    if not raw.isdigit() or int(raw) > MAX_GRACE_SECONDS:
        return None
    return int(raw), fields.get("end_previous_keys_early") == "1"


@page
async def rotate(request: ConsoleRequest) -> Response:
    chosen = _rotation_choice(await form(request))
    if chosen is None:
        return await _show(request, 400, error="Choose how long the old key keeps working.")
    grace, early = chosen
    try:
        async with unit_of_work(request) as session:
            env = await environment(session, request)
            rotated = await events.rotate_webhook_key(
                session, env, grace_seconds=grace, end_previous_keys_early=early
            )
            await session.refresh(env)
    except environments.KeysWouldEndEarly as exc:
        return _confirm_rotation(request, exc, grace, "rotate")
    return _show_key(request, env, rotated)


@page
async def rotate_intake_key(request: ConsoleRequest) -> Response:
    chosen = _rotation_choice(await form(request))
    if chosen is None:
        return await _show(request, 400, error="Choose how long the old key keeps working.")
    grace, early = chosen
    try:
        async with unit_of_work(request) as session:
            env = await environment(session, request)
            rotated = await events.rotate_source_write_key(
                session, env, grace_seconds=grace, end_previous_keys_early=early
            )
    except environments.KeysWouldEndEarly as exc:
        return _confirm_rotation(request, exc, grace, "rotate-intake-key")
    return render(
        request,
        "intake_key.html",
        env=env,
        key=rotated.key,
        tracking_host=request.state["settings"].public_base_url,
        previous_valid_until=rotated.replaced_until,
    )


def _confirm_rotation(
    request: ConsoleRequest, refused: environments.KeysWouldEndEarly, grace: int, action: str
) -> Response:
    """The rotation asked for would end earlier keys sooner than they were promised: say
    which and when, and let the operator confirm (the same form, with the flag) or go back."""
    return render(
        request,
        "confirm_rotation.html",
        409,
        env_id=request.path_params["env_id"],
        what=KEY_LABELS[refused.kind],
        keys=refused.keys,
        ends=refused.ends,
        grace=grace,
        grace_words=duration(grace) if grace else "none",
        # Rounded up to the minute: still keeps every promise, and reads as words.
        needed=duration(-(-refused.needed_seconds // 60) * 60),
        action=action,
    )


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
    Route("/environments/{env_id}/rotate-intake-key", rotate_intake_key, methods=["POST"]),
    Route("/environments/{env_id}/test", send_test_event, methods=["POST"]),
    Route("/environments/{env_id}/resume", resume_delivery, methods=["POST"]),
]
