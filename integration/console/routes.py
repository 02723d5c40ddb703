"""Everything under /admin: the console's pages and its static files, behind the guard."""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from integration.console import (
    auth,
    browse,
    conflicts,
    deliveries,
    environments,
    ledger,
    live,
    mappings,
    plans,
)
from integration.console.common import HERE, PREFIX, Console


def console_routes(console: Console) -> list[BaseRoute]:
    routes: list[BaseRoute] = [
        *auth.routes,
        *environments.routes,
        *live.routes,
        *deliveries.routes,
        *ledger.routes,
        *browse.routes,
        *conflicts.routes,
        *mappings.routes,
        *plans.routes,
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="console-static"),
    ]
    return [
        Mount(
            PREFIX,
            routes=routes,
            middleware=[Middleware(auth.ConsoleGuard, signer=console.signer)],
        )
    ]
