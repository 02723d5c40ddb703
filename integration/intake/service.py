"""The /v1 intake's service: a call is authenticated, read, parsed, validated and published,
the way the webhook's requests are and through the same pieces (environments/keys.py for the
write key, http/body.py for reading and parsing, spec.py for what is valid).

A key in the Authorization header is looked up before a byte of the body is read, so an
unknown one costs one indexed lookup; a key in the body can only be read after the body, which
is bounded by the byte budget and MAX_BODY_BYTES. Every wait on the database has one deadline
(WEBHOOK_DEADLINE_SECONDS), with 503 and Retry-After past it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from integration.config import Settings
from integration.deadline import within
from integration.environments import origins
from integration.environments.key_cache import KeyCache
from integration.environments.keys import WRITE_KEY, KeyAuthenticator
from integration.environments.repository import (
    SourceMatch,
    origin_allowed_somewhere,
    publishing,
)
from integration.errors import AppError, BadRequest, Forbidden
from integration.http.body import BodyReader, off_loop
from integration.intake.answers import Accepted, preflight_headers, refusal_of
from integration.intake.call import MAX_BODY_BYTES, Call, CallBody, basic_user, parse_call
from integration.intake.edge import as_segment_would
from integration.outbound.publish import Published, Ready, enqueue, prepare
from integration.spec import NoneValid, Rejection, require_valid
from integration.store.db import SessionMaker, driver_connection, transaction

Prepared = tuple[list[Ready], list[Rejection]]


@dataclass(frozen=True, slots=True)
class ReadIn:
    """A call authenticated and read: its environment, its allowed browser origin (if any),
    its body, its messages made ready (and those refused), and the bytes it was sent as."""

    source: SourceMatch
    origin: str | None
    body: CallBody
    prepared: Prepared
    raw_size: int


def _weight(call: Call, raw: bytes) -> int:
    """How much work a body may be, for off_loop: a compressed one is inflated in a thread,
    since a few KB may hold a MB of JSON."""
    return MAX_BODY_BYTES if call.content_encoding else len(raw)


def check(ready: list[Ready], rejected: list[Rejection]) -> None:
    """Refuse the call when Segment would: a message over 32 KB refuses the whole request;
    so does a call where no message is valid. A batch's other invalid messages are listed in
    the answer, and its valid ones kept."""
    for r in ready:
        if r.too_large:
            raise BadRequest(r.too_large, error="message_too_large")
    try:
        require_valid(len(ready), rejected)
    except NoneValid as none:
        raise refusal_of(none) from None


class Intake:
    """The intake's service, made once per process in the app's lifespan."""

    def __init__(
        self,
        engine: AsyncEngine,
        sessions: SessionMaker,
        settings: Settings,
        keys: KeyCache[SourceMatch] | None = None,
    ) -> None:
        self._engine = engine
        self._keys = KeyAuthenticator(engine, WRITE_KEY, settings.auth_failures_per_minute, keys)
        self._sessions = sessions
        self._deadline = settings.webhook_deadline_seconds

    async def receive(
        self,
        call: Call,
        read_body: BodyReader,
        hold: Callable[[int], None],
    ) -> Accepted:
        """Authenticate, read (`read_body`: the body within the byte budget; `hold`: what the
        request holds of the budget, grown to count the inflated body too), check, publish."""
        deadline = asyncio.get_running_loop().time() + self._deadline
        key = basic_user(call.authorization)
        if key is None:
            read_in = await self._keyed_in_body(call, read_body, deadline)
        else:
            read_in = await self._keyed_in_header(call, key, read_body, deadline)
        if call.content_encoding:
            hold(read_in.raw_size + read_in.body.size)
        check(*read_in.prepared)
        published = await within(deadline, self._commit(read_in.source, *read_in.prepared))
        return Accepted(published, read_in.origin)

    async def _keyed_in_header(
        self, call: Call, key: str, read_body: BodyReader, deadline: float
    ) -> ReadIn:
        """Authenticated (and the origin checked) before a byte of the body is read; then
        the body is read and its messages prepared in one go."""
        source = await self._keys.authenticate(key, call.client, deadline)
        origin = self._origin(call.origin, source)
        raw = await read_body()
        body, prepared = await off_loop(_weight(call, raw), _parse_and_prepare, call, raw)
        return ReadIn(source, origin, body, prepared, len(raw))

    async def _keyed_in_body(self, call: Call, read_body: BodyReader, deadline: float) -> ReadIn:
        """The key can only be read from the body: read it, authenticate, then prepare. A
        body refused before its key could be read is a failed authentication too: else
        unreadable bodies would be the one unthrottled way to make us read and inflate."""
        try:
            raw = await read_body()
            body = await off_loop(
                _weight(call, raw), parse_call, call.kind, raw, call.content_encoding
            )
        except AppError as exc:
            if 400 <= exc.status_code < 500:
                self._keys.failed(call.client)
            raise
        source = await self._keys.authenticate(body.write_key, call.client, deadline)
        origin = self._origin(call.origin, source)
        prepared = await off_loop(body.size, _prepare, body)
        return ReadIn(source, origin, body, prepared, len(raw))

    def _origin(self, origin: str | None, source: SourceMatch) -> str | None:
        """A browser's call is answered with CORS headers when its environment allows its
        origin, and refused when not: a site the operator did not list may not publish."""
        if origin is None:
            return None
        if not origins.allowed(origin, source.cors_allowed_origins):
            raise Forbidden(
                "this origin is not among the environment's cors_allowed_origins",
                error="origin_not_allowed",
            )
        return origin

    async def _commit(
        self, source: SourceMatch, ready: list[Ready], rejected: list[Rejection]
    ) -> Published:
        async with transaction(self._sessions) as session:
            # The stream switch and the copy option as of this transaction, not the lookup.
            env = await publishing(session, source.id)
            if env is None:  # deleted since its key was looked up
                raise self._keys.unknown()
            return await enqueue(session, env, ready, rejected)

    async def preflight(self, origin: str, method: str | None) -> dict[str, str] | None:
        """The headers that allow a browser's preflight for `origin`, or None to refuse it. It
        carries no key, so it is allowed when any environment lists the origin; the call
        itself is then checked against its own environment's list."""
        if (method or "").upper() != "POST":
            return None
        try:
            normalised = origins.normalise(origin)
        except origins.NotAnOrigin:
            return None
        deadline = asyncio.get_running_loop().time() + self._deadline
        allowed = await within(deadline, self._allowed_somewhere(normalised))
        return preflight_headers(origin) if allowed else None

    async def _allowed_somewhere(self, origin: str) -> bool:
        async with driver_connection(self._engine) as pg:
            return await origin_allowed_somewhere(pg, origin)


def _prepare(body: CallBody) -> Prepared:
    return prepare(as_segment_would(body), body.received_at, keep_library=True)


def _parse_and_prepare(call: Call, raw: bytes) -> tuple[CallBody, Prepared]:
    body = parse_call(call.kind, raw, call.content_encoding)
    return body, _prepare(body)
