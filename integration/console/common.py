"""What the console's pages share: the request's state, the session, forms with their CSRF
check, templates, and errors shown as pages."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict, cast
from urllib.parse import parse_qsl

import httpx
import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from integration.config import KIB, Settings
from integration.console.session import Session, Signer
from integration.crypto import SecretBox
from integration.environments import service as environments
from integration.errors import AppError, BadRequest, Forbidden
from integration.http.body import read_bounded
from integration.inbound.live import LiveLog
from integration.store.db import SessionMaker, transaction
from integration.store.models import Environment
from integration.throttle import FailureThrottle

PREFIX = "/admin"
FORM_LIMIT = 64 * KIB
MAX_FORM_FIELDS = 50
HERE = Path(__file__).parent


class ConsoleState(TypedDict):
    """What console pages read of the app's state."""

    settings: Settings
    engine: AsyncEngine
    sessions: SessionMaker
    box: SecretBox
    http: httpx.AsyncClient
    live: LiveLog
    console: Console


class Console:
    """Made once per process: the session signer; the failed-authentication throttle the REST
    API's bearer token drains too (one token, one budget, whichever door it is tried at)."""

    def __init__(self, settings: Settings, throttle: FailureThrottle) -> None:
        self.signer = Signer(settings.secret_key or "", settings.admin_token or "")
        self.admin_token = settings.admin_token or ""
        self.throttle = throttle


ConsoleRequest = Request[ConsoleState]
Page = Callable[[ConsoleRequest], Awaitable[Response]]


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "never"


def _ago(value: datetime | None) -> str:
    if value is None:
        return "never"
    seconds = int((datetime.now(UTC) - value).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{max(seconds, 0)} s ago"


def _pretty(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()


templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters.update(when=_when, ago=_ago, pretty=_pretty)
templates.env.globals["prefix"] = PREFIX


def session_of(request: ConsoleRequest) -> Session | None:
    """The session the guard found on the request (None without a valid cookie)."""
    found: Session | None = request.scope.get("console_session")
    return found


def render(
    request: ConsoleRequest,
    template: str,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> Response:
    session = session_of(request)
    signer = request.state["console"].signer
    context.setdefault("csrf", signer.csrf_token(session) if session else "")
    context.setdefault("signed_in", bool(session and session.signed_in))
    # Starlette types the template's request with the untyped state; the state is not read.
    untyped = cast(Request, request)
    return templates.TemplateResponse(
        untyped, template, context, status_code=status_code, headers=headers
    )


def redirect(path: str) -> Response:
    """After a form: see the result with a GET (a reload does not post it again)."""
    return RedirectResponse(PREFIX + path, status_code=303)


def unit_of_work(request: ConsoleRequest) -> AbstractAsyncContextManager[AsyncSession]:
    return transaction(request.state["sessions"])


@asynccontextmanager
async def snapshot(request: ConsoleRequest) -> AsyncIterator[AsyncSession]:
    """A read-only transaction whose statements all see one moment: a page that shows counts
    beside the rows they count must not catch the worker between two of its statements."""
    async with transaction(request.state["sessions"]) as session:
        await session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
        yield session


async def environment(session: AsyncSession, request: ConsoleRequest) -> Environment:
    return await environments.get(session, request.path_params["env_id"])


async def form(request: ConsoleRequest) -> dict[str, str]:
    """The posted form (URL-encoded, bounded), after its CSRF token was checked against the
    session: every console form is read through here."""
    raw = await read_bounded(request, FORM_LIMIT)
    try:
        pairs = parse_qsl(
            raw.decode(),
            keep_blank_values=True,
            max_num_fields=MAX_FORM_FIELDS,
            strict_parsing=False,
        )
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("the form could not be read") from None
    fields = dict(pairs)
    session = session_of(request)
    if session is None or not request.state["console"].signer.csrf_valid(
        session, fields.pop("csrf", None)
    ):
        raise Forbidden(
            "the form's security token is missing or belongs to another session: reload the"
            " page and try again",
            error="csrf",
        )
    return fields


def page(handler: Page) -> Page:
    """A console endpoint: an error is shown as a page, in the console's layout."""

    @functools.wraps(handler)
    async def run(request: ConsoleRequest) -> Response:
        try:
            return await handler(request)
        except AppError as exc:
            return render(
                request,
                "error.html",
                status_code=exc.status_code,
                error=exc.detail,
                headers=exc.headers(),
            )

    return run
