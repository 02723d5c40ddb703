"""Who may call an /api route: the admin token (every route), or an environment's API key
(the routes of its own environment that name one of its scopes in their `@operation`).

The token is compared in constant time; a key is found by its digest (environments/api_keys).
Failed attempts, with either, are throttled per client and logged with the client's address
(never what it sent); the throttle never refuses a valid token or key (throttle.py). A key
that authenticates but may not call the route gets 403 and is not counted as a failure: it
is no guess."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from integration.crypto import constant_time_equal
from integration.environments import api_keys
from integration.http.openapi import Operation
from integration.http.responses import JSON
from integration.store.db import SessionMaker, transaction
from integration.throttle import FailureThrottle, client_key

log = logging.getLogger(__name__)
BEARER = b"Bearer "


class AdminAuth:
    """`throttle` is shared with the console's sign-in: the same token, one failure budget.
    `routes` are the admin API's, whose `@operation` names the scope an API key needs."""

    def __init__(
        self,
        app: ASGIApp,
        token: str,
        throttle: FailureThrottle,
        routes: Sequence[BaseRoute] = (),
    ) -> None:
        self.app = app
        self.expected = BEARER + token.encode()
        self.throttle = throttle
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # The credential first (a constant-time comparison, then a hash lookup): a valid one
        # passes whatever else came from this address; only failures meet the throttle.
        given = _authorization(scope)
        if constant_time_equal(given, self.expected):
            await self.app(scope, receive, send)
            return
        grant = await self._grant(scope, given)
        if grant is None:
            await self._failed(scope, receive, send)
            return
        needed, env_id = self._requirement(scope)
        if not grant.allows(needed, env_id):
            await _refuse(
                scope,
                receive,
                send,
                403,
                "forbidden",
                _forbidden_detail(grant, needed, env_id),
            )
            return
        await self.app(scope, receive, send)

    async def _failed(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = client_key(scope)
        if wait := self.throttle.failure(client):
            detail = f"too many failed authentications from {client}; retry in {wait} s"
            headers = {"Retry-After": str(wait)}
            error = "too_many_failed_authentications"
            await _refuse(scope, receive, send, 429, error, detail, headers)
            return
        log.warning(
            "admin authentication failed from %s: %s %s",
            client,
            scope["method"],
            scope["path"][:200],
        )
        detail = "send Authorization: Bearer <ADMIN_TOKEN or an API key>"
        headers = {"WWW-Authenticate": 'Bearer realm="admin"'}
        await _refuse(scope, receive, send, 401, "unauthorized", detail, headers)

    async def _grant(self, scope: Scope, given: bytes) -> api_keys.Grant | None:
        if not given.startswith(BEARER):
            return None
        token = given[len(BEARER) :].decode("latin-1")
        sessions: SessionMaker = scope["state"]["sessions"]
        async with transaction(sessions) as session:
            return await api_keys.authenticate(session, token)

    def _requirement(self, scope: Scope) -> tuple[str | None, str | None]:
        """The scope the matching route declares, and the environment in its path."""
        for route in self.routes:
            match, child = route.matches(scope)
            if match is Match.FULL:
                op: Operation | None = getattr(child.get("endpoint"), "__openapi__", None)
                env_id = child.get("path_params", {}).get("env_id")
                return (op.scope if op else None), (str(env_id).lower() if env_id else None)
        return None, None


def _authorization(scope: Scope) -> bytes:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return bytes(value)
    return b""


def _forbidden_detail(grant: api_keys.Grant, needed: str | None, env_id: str | None) -> str:
    if needed is None:
        return "this route needs the admin token; API keys cannot call it"
    if env_id != str(grant.environment_id):
        return "this API key belongs to another environment"
    return f"this API key lacks the {needed!r} scope"


async def _refuse(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    error: str,
    detail: str,
    headers: dict[str, str] | None = None,
) -> None:
    await JSON({"error": error, "detail": detail}, status_code=status, headers=headers)(
        scope, receive, send
    )
