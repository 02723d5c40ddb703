"""Bearer ADMIN_TOKEN on every /api route, compared in constant time, with failed attempts
throttled per client and logged with the client's address (never what it sent)."""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Receive, Scope, Send

from integration.crypto import constant_time_equal
from integration.http.responses import JSON
from integration.throttle import FailureThrottle, client_key

log = logging.getLogger(__name__)


class AdminAuth:
    """`throttle` is shared with the console's sign-in: the same token, one failure budget."""

    def __init__(self, app: ASGIApp, token: str, throttle: FailureThrottle) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()
        self.throttle = throttle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = client_key(scope)
        wait = self.throttle.retry_after(client)
        if wait:
            response = JSON(
                {
                    "error": "too_many_failed_authentications",
                    "detail": f"too many failed authentications from {client}; retry in {wait} s",
                },
                status_code=429,
                headers={"Retry-After": str(wait)},
            )
        elif self._authorized(scope):
            await self.app(scope, receive, send)
            return
        else:
            self.throttle.failed(client)
            log.warning(
                "admin authentication failed from %s: %s %s",
                client,
                scope["method"],
                scope["path"][:200],
            )
            response = JSON(
                {"error": "unauthorized", "detail": "send Authorization: Bearer <ADMIN_TOKEN>"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="admin"'},
            )
        await response(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        given = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                given = value
                break
        return constant_time_equal(given, self.expected)
