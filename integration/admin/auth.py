"""Bearer ADMIN_TOKEN on every /api route, compared in constant time."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from integration.crypto import constant_time_equal
from integration.web import JSON


class AdminAuth:
    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._authorized(scope):
            response = JSON(
                {"error": "unauthorized", "detail": "send Authorization: Bearer <ADMIN_TOKEN>"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="admin"'},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        given = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                given = value
                break
        return constant_time_equal(given, self.expected)
