"""Everything under /api, behind the admin token or an environment's API key (admin/auth.py)."""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount

from integration.admin import (
    api_keys,
    companies,
    conflicts,
    deletions,
    deliveries,
    delivery_breaker,
    environments,
    events,
    ledger,
    mappings,
    plans,
    product_events,
    quarantine,
    stats,
    users,
)
from integration.admin.auth import AdminAuth
from integration.config import Settings
from integration.throttle import FailureThrottle


def api_routes(settings: Settings, throttle: FailureThrottle) -> list[BaseRoute]:
    routes = [
        *environments.routes,
        *api_keys.routes,
        *product_events.routes,
        *deliveries.routes,
        *delivery_breaker.routes,
        *users.routes,
        *conflicts.routes,
        *deletions.routes,
        *companies.routes,
        *events.routes,
        *stats.routes,
        *ledger.routes,
        *mappings.routes,
        *plans.routes,
        *quarantine.routes,
    ]
    return [
        Mount(
            "/api",
            routes=routes,
            middleware=[
                Middleware(
                    AdminAuth,
                    token=settings.admin_token or "",
                    throttle=throttle,
                    routes=routes,
                )
            ],
        )
    ]
