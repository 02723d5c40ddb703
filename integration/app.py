"""Assembles the Starlette app: routes, middleware, and the clients made in its lifespan."""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from integration import __version__
from integration.admin.routes import api_routes
from integration.config import Settings, get_settings
from integration.crypto import SecretBox
from integration.errors import Unavailable
from integration.inbound.group_commit import GroupCommit
from integration.inbound.routes import routes as inbound_routes
from integration.inbound.service import Inbound
from integration.logs import configure_logging, request_id
from integration.metrics import OUTBOX_MESSAGES, REQUEST_LATENCY, children, render
from integration.openapi import SWAGGER_UI_STATIC, docs, openapi_json, operation
from integration.queue import Queue
from integration.store.db import make_engine, make_sessionmaker, within
from integration.store.models import DELIVERY_STATUSES
from integration.web import EXCEPTION_HANDLERS, JSON, ByteBudget

log = logging.getLogger(__name__)
access = logging.getLogger("integration.access")
READY_CHECK_SECONDS = 2.0


class Health(BaseModel):
    status: str
    version: str


class Readiness(BaseModel):
    status: str
    checks: dict[str, str]


@operation(summary="The process is up", response=Health, errors=(), tag="operations")
async def healthz(request: Request) -> Response:
    return JSON({"status": "ok", "version": __version__})


@operation(
    summary="Postgres and Redis are reachable (503 names the one that is not)",
    response=Readiness,
    errors=(),
    tag="operations",
)
async def readyz(request: Request) -> Response:
    state = request.app.state
    # Each check has its own short deadline: a frozen dependency makes a 503, not a hang.
    deadline = asyncio.get_running_loop().time() + READY_CHECK_SECONDS
    postgres, redis = await asyncio.gather(
        _answers(deadline, _postgres_ok(state)), _answers(deadline, state.queue.ping())
    )
    checks = {"postgres": postgres, "redis": redis}
    ok = all(checks.values())
    body = {
        "status": "ready" if ok else "unavailable",
        "checks": {k: "ok" if v else "unreachable" for k, v in checks.items()},
    }
    return JSON(body, status_code=200 if ok else 503)


async def _answers(deadline: float, check: Awaitable[bool]) -> bool:
    try:
        return await within(deadline, check)
    except Unavailable:
        return False


async def _postgres_ok(state: Any) -> bool:
    try:
        async with state.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


@operation(
    summary="Prometheus metrics in the text exposition format",
    response=None,
    response_schema={"type": "string"},
    media_type="text/plain",
    errors=(),
    tag="operations",
)
async def metrics(request: Request) -> Response:
    await _outbox_gauges(request.app.state.engine)
    return Response(render(), media_type=CONTENT_TYPE_LATEST)


async def _outbox_gauges(engine: Any) -> None:
    """The outbox's state is in Postgres, so its gauges are read there, at scrape time. The
    worker's own counters (Segment responses, delivery latency) are on WORKER_METRICS_PORT."""
    try:
        async with engine.begin() as conn:
            await conn.execute(text("SET LOCAL statement_timeout = '2s'"))
            rows = (
                await conn.execute(text("SELECT status, count(*) FROM outbox GROUP BY status"))
            ).all()
    except Exception as exc:  # metrics must still answer while the database is away
        log.warning("outbox gauges unavailable: %s", type(exc).__name__)
        return
    counts = dict(rows)
    for status in DELIVERY_STATUSES:
        OUTBOX_MESSAGES.labels(status).set(counts.get(status, 0))


_request_latency = children(REQUEST_LATENCY)


class _RequestIds:
    """Request ids need to be unique, not secret: a random prefix per process and a counter
    are, without a system call per request."""

    def __init__(self) -> None:
        self._renew()
        os.register_at_fork(after_in_child=self._renew)

    def _renew(self) -> None:
        self.prefix = os.urandom(11).hex()
        self._count = itertools.count()

    def next(self) -> str:
        return f"{self.prefix}{next(self._count):010x}"


_ids = _RequestIds()


def route_template(scope: Scope) -> str:
    """The matched route's path template with the paths of the mounts above it ("/api/..."):
    the route sets only its own part, and each mount adds its part to root_path."""
    route = scope.get("route")
    if route is None:
        return "unmatched"
    root = str(scope.get("root_path", ""))
    prefix = root[len(str(scope.get("app_root_path", root))) :]
    # A mount that answered itself (static files, or the admin auth before any admin route).
    if isinstance(route, Mount):
        return prefix
    return prefix + str(getattr(route, "path", ""))


class RequestMiddleware:
    """Per request: an id (the caller's X-Request-ID or a new one) for logs and the response,
    the latency by route template (never the raw path, which holds webhook keys), and one
    access log line. Uvicorn's own access log stays off because it would print the key."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        rid = given if 0 < len(given) <= 128 and given.isprintable() else _ids.next()
        token = request_id.set(rid)
        start = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            route = route_template(scope)
            _request_latency(route, scope["method"], status).observe(elapsed)
            access.info("%s %s %d %.1fms", scope["method"], route, status, elapsed * 1000)
            request_id.reset(token)


def _settle_garbage_collector() -> None:
    """The modules, models and pools made at startup live as long as the process. Frozen, the
    cyclic collector stops rescanning them on every full collection; with a larger first
    threshold it runs less often on the short-lived dicts each request makes. (Profiled: the
    collector was the largest single cost of a webhook request.)"""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or get_settings()
    settings.require("database_url", "secret_key", "admin_token")
    if not logging.getLogger().handlers:
        # An API process that `serve --workers` started: a fresh interpreter, logs unset.
        configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        engine = make_engine(settings)
        app.state.settings = settings
        app.state.engine = engine
        app.state.queue = Queue(settings)
        app.state.sessions = make_sessionmaker(engine, enqueue=app.state.queue.send)
        app.state.box = SecretBox.of(settings)
        app.state.ingest = GroupCommit(
            engine, writers=settings.ingest_writers, max_messages=settings.ingest_max_messages
        )
        app.state.ingest.start()
        app.state.inbound = Inbound(engine, app.state.box, app.state.ingest, settings)
        app.state.body_budget = ByteBudget(settings.max_inflight_bytes)
        app.state.http = httpx.AsyncClient(timeout=settings.segment_timeout_seconds)
        _settle_garbage_collector()
        try:
            yield
        finally:
            await app.state.ingest.stop()
            await app.state.http.aclose()
            await app.state.queue.close()
            await engine.dispose()

    routes = [
        *inbound_routes,  # first: the router tries routes in order, and this one is the busiest
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Route("/openapi.json", openapi_json),
        Route("/docs", docs),
        Mount("/docs/static", StaticFiles(directory=SWAGGER_UI_STATIC)),
        *api_routes(settings),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=EXCEPTION_HANDLERS)
    app.add_middleware(RequestMiddleware)
    return app
