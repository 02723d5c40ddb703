"""Assembly only: the clients made in the lifespan (its typed state), the routes, the
middleware. Every decision lives in the module it names."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from functools import partial

import httpx
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from integration.admin.common import AdminState
from integration.admin.routes import api_routes
from integration.config import Settings, get_settings
from integration.console.common import Console, ConsoleState
from integration.console.routes import console_routes
from integration.crypto import SecretBox
from integration.environments import current_mappings
from integration.environments.current_mappings import CurrentMappings
from integration.environments.key_cache import ChangeListener, KeyCache, forget_on_commit
from integration.environments.repository import KeyMatch, SourceMatch
from integration.http.body import ByteBudget
from integration.http.errors import EXCEPTION_HANDLERS
from integration.http.middleware import RequestMiddleware
from integration.http.openapi import document_routes
from integration.http.ops import OpsState
from integration.http.ops import routes as ops_routes
from integration.inbound.digests import InstallKey
from integration.inbound.group_commit import GroupCommit
from integration.inbound.live import ERASED_CHANNEL, LiveLog, on_erased
from integration.inbound.routes import InboundState
from integration.inbound.routes import routes as inbound_routes
from integration.inbound.service import Inbound
from integration.intake.routes import IntakeState
from integration.intake.routes import routes as intake_routes
from integration.intake.service import Intake
from integration.logs import configure_logging
from integration.outbound import outbox
from integration.plans.cache import PlanCache
from integration.plans.cache import serve as serve_plans
from integration.queue import Queue
from integration.store import db
from integration.throttle import FailureThrottle

# The application_name of each API process's listening connection (pg_stat_activity).
LISTENER_NAME = "segment-integration: environment changes"


class AppState(InboundState, IntakeState, AdminState, ConsoleState, OpsState):
    """What the lifespan makes and every request reads (`request.state[...]`), typed: each
    package's routes declare the part they use."""


def _settle_garbage_collector() -> None:
    """The modules, models and pools made at startup live as long as the process. Frozen, the
    cyclic collector stops rescanning them on every full collection; with a larger first
    threshold it runs less often on the short-lived dicts each request makes. (Profiled: the
    collector was the largest single cost of a webhook request.)"""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def lifespan(
    settings: Settings, console: Console
) -> Callable[[Starlette], AbstractAsyncContextManager[AppState]]:
    @asynccontextmanager
    async def run(app: Starlette) -> AsyncIterator[AppState]:
        async with AsyncExitStack() as stack:
            engine = db.make_engine(settings)
            stack.push_async_callback(engine.dispose)
            queue = Queue(settings)
            stack.push_async_callback(queue.close)
            sessions = db.make_sessionmaker(engine, enqueue=queue.send)
            box = SecretBox.of(settings)
            key = InstallKey.of(settings)
            commit = GroupCommit(
                engine,
                key,
                writers=settings.ingest_writers,
                max_messages=settings.ingest_max_messages,
            )
            commit.start()
            stack.push_async_callback(commit.stop)
            http = httpx.AsyncClient(timeout=settings.segment_timeout_seconds)
            stack.push_async_callback(http.aclose)
            webhook_keys = KeyCache[KeyMatch]("webhook", settings.key_cache_seconds)
            source_keys = KeyCache[SourceMatch]("source", settings.key_cache_seconds)
            mappings = CurrentMappings()
            current_mappings.serve(sessions, mappings)
            plan_cache = PlanCache(engine)
            serve_plans(sessions, plan_cache)
            live = LiveLog()
            listener = ChangeListener(
                db.make_engine(settings, pool_size=1, name=LISTENER_NAME),
                [webhook_keys, source_keys, mappings, plan_cache],
                also={ERASED_CHANNEL: on_erased(live, key)},
            )
            listener.start()
            stack.push_async_callback(listener.stop)
            forget_on_commit(sessions, listener)
            _settle_garbage_collector()
            yield AppState(
                settings=settings,
                engine=engine,
                sessions=sessions,
                box=box,
                http=http,
                inbound=Inbound(
                    engine, box, commit, settings, live, webhook_keys, mappings, plan_cache
                ),
                intake=Intake(engine, sessions, settings, source_keys),
                live=live,
                console=console,
                body_budget=ByteBudget(settings.max_inflight_bytes),
                checks={"postgres": partial(db.ping, engine), "redis": queue.ping},
                collect_metrics=partial(outbox.refresh_gauges, sessions),
            )

    return run


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or get_settings()
    settings.require("database_url", "secret_key", "admin_token")
    if not logging.getLogger().handlers:
        # An API process that `serve --workers` started: a fresh interpreter, logs unset.
        configure_logging(settings.log_level)
    # Wrong admin tokens, at the API or the console's sign-in, drain one budget per client.
    throttle = FailureThrottle(settings.admin_auth_burst, settings.admin_auth_refill_seconds)
    console = Console(settings, throttle)
    routes: list[BaseRoute] = [
        *inbound_routes,  # first: the router tries routes in order, and this one is the busiest
        *intake_routes,
        *ops_routes,
        *api_routes(settings, throttle),
    ]
    routes += document_routes(routes)
    routes += console_routes(console)  # after the document: the console is not in the API
    app = Starlette(
        routes=routes, lifespan=lifespan(settings, console), exception_handlers=EXCEPTION_HANDLERS
    )
    app.add_middleware(RequestMiddleware)
    return app
