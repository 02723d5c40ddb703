"""Per request, around every route: an id, the latency by route template, one access line."""

from __future__ import annotations

import itertools
import logging
import os
import time

from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from integration.logs import request_id
from integration.metrics import REQUEST_LATENCY, children, method_label

access = logging.getLogger("integration.access")

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
            method = method_label(scope["method"])
            _request_latency(route, method, status).observe(elapsed)
            access.info("%s %s %d %.1fms", method, route, status, elapsed * 1000)
            request_id.reset(token)
