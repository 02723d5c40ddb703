"""The Segment-compatible intake: Segment's HTTP Tracking API (`/v1/track`, `/v1/batch`, ...)
served for each environment, so that any Segment library or tool can publish through us.

A call authenticates with the environment's source write key (HTTP Basic user name, or
`writeKey` in the body, as Segment accepts), and its messages go the way `publish()`'s do: the
same validation and normalisation, the same outbox, the same stream switch. What differs is
what Segment's own edge does to a message before it is stored, done here instead:

- a batch's envelope `context` and `integrations` are merged into each message (the message's
  own keys win);
- `writeKey` is taken out: it is our key, not one for Segment;
- timestamps as Segment sets them: `originalTimestamp` is the time the client gave,
  `receivedAt` ours, and `timestamp` is corrected for the client's clock skew,
  `receivedAt - (sentAt - originalTimestamp)`, when the client said when it sent the call.
  The message's own `sentAt` is dropped: the worker sends the time of each delivery attempt as
  the batch's `sentAt`, against which Segment makes the same correction again, now by nothing;
- a caller's `messageId` is kept (its retries dedupe in the outbox), and `context.library`
  (the caller's library) is kept, ours filled in only where there is none.

Like the webhook, a key in the Authorization header is looked up before a byte of the body is
read, so an unknown one costs one indexed lookup; a key in the body can only be read after the
body, which is bounded by the byte budget and MAX_BODY_BYTES. Every wait on the database has
one deadline (WEBHOOK_DEADLINE_SECONDS), with 503 and Retry-After past it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from integration.config import KIB, Settings
from integration.crypto import hash_key
from integration.deadline import within
from integration.environments import origins
from integration.environments.key_cache import KeyCache
from integration.environments.repository import (
    SourceMatch,
    find_by_source_write_key,
    origin_allowed_somewhere,
    publishing,
)
from integration.errors import (
    AppError,
    BadRequest,
    Forbidden,
    TooManyRequests,
    Unauthorized,
)
from integration.http.body import inflate
from integration.outbound.publish import Published, Ready, enqueue, prepare
from integration.outbound.segment import MAX_BATCH_BYTES
from integration.spec import MAX_BATCH_MESSAGES as SPEC_MAX_BATCH_MESSAGES
from integration.spec import MessageError, decode, oversized, parse_time
from integration.store.db import SessionMaker, driver_connection, transaction
from integration.throttle import KeyGate

P = ParamSpec("P")
T = TypeVar("T")

BATCH = "batch"
CALLS = frozenset({"identify", "track", "page", "screen", "group", "alias", BATCH})
# What is read of a request, as sent or inflated, before it is refused with 413. Segment's own
# limit on a batch (500 KB, answered 400 as Segment answers it) is checked on what was read.
MAX_BODY_BYTES = 2 * MAX_BATCH_BYTES
# Bodies above this are inflated, parsed and validated in a thread, as the webhook's are.
THREAD_ABOVE_BYTES = 64 * KIB
# Segment caps a batch by its bytes only (500 KB), which holds some 170,000 `{}`: validating
# them took 3.5 s, and listing each refusal made a 15 MB answer. A batch is capped at the
# webhook's count as well (Segment's libraries send at most a few hundred), and an answer
# lists the first refusals and counts the rest.
MAX_BATCH_MESSAGES = SPEC_MAX_BATCH_MESSAGES
LISTED_REJECTIONS = 100
MAX_DETAIL_CHARS = 200
# What a CORS preflight allows: the one method, and the headers Segment's libraries send.
ALLOWED_HEADERS = "Authorization, Content-Type, Content-Encoding"
PREFLIGHT_MAX_AGE = "600"


@dataclass(frozen=True, slots=True)
class Call:
    """One request to the intake, as the route read it from the headers."""

    kind: str  # a message type, or "batch"
    client: str
    authorization: str | None = None
    content_encoding: str | None = None
    origin: str | None = None


@dataclass(frozen=True, slots=True)
class Accepted:
    """The answer to an intake call, once its messages are committed (or, stream off, not
    queued). `origin` is the caller's browser origin when its environment allows it."""

    published: Published
    origin: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"success": True}
        if not self.published.stream_enabled:
            out |= {
                "queued": 0,
                "stream_enabled": False,
                "detail": "accepted, not queued: this environment's stream to Segment is off",
            }
        return out | listed(self.published.rejected)

    def headers(self) -> dict[str, str]:
        out = {"X-Stream-Enabled": "true" if self.published.stream_enabled else "false"}
        if self.origin:
            out |= cors_headers(self.origin)
            out["Access-Control-Expose-Headers"] = "X-Stream-Enabled"
        return out


@dataclass(slots=True)
class Body:
    """A call's messages, and the envelope fields that apply to each of them."""

    messages: list[Any]
    size: int = 0  # bytes, inflated
    write_key: Any = None
    sent_at: Any = None
    context: Any = None
    integrations: Any = None
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))


Prepared = tuple[list[Ready], list[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class ReadIn:
    """A call authenticated and read: its environment, its allowed browser origin (if any),
    its body, its messages made ready (and those refused), and the bytes it was sent as."""

    source: SourceMatch
    origin: str | None
    body: Body
    prepared: Prepared
    raw_size: int


def _weight(call: Call, raw: bytes) -> int:
    """How much work a body may be, for _off_loop: a compressed one is inflated in a thread,
    since a few KB may hold a MB of JSON."""
    return MAX_BODY_BYTES if call.content_encoding else len(raw)


def listed(rejected: list[dict[str, Any]]) -> dict[str, Any]:
    """The refused messages as an answer lists them: the first LISTED_REJECTIONS (each detail
    cut short), and how many there were; nothing when none was refused."""
    if not rejected:
        return {}
    first = [
        {**r, "detail": str(r.get("detail", ""))[:MAX_DETAIL_CHARS]}
        for r in rejected[:LISTED_REJECTIONS]
    ]
    return {"rejected": first, "rejected_count": len(rejected)}


def cors_headers(origin: str) -> dict[str, str]:
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}


def preflight_headers(origin: str) -> dict[str, str]:
    return cors_headers(origin) | {
        "Access-Control-Allow-Methods": "POST, OPTIONS",
        "Access-Control-Allow-Headers": ALLOWED_HEADERS,
        "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
    }


def basic_user(authorization: str | None) -> str | None:
    """The user name of an HTTP Basic Authorization header (Segment's write key, with an
    empty password or, as Segment tolerates, no colon at all); None for any other header."""
    scheme, _, credentials = (authorization or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode()
    except ValueError:  # not base64 (binascii.Error), not ASCII, or not UTF-8 once decoded
        return None
    return decoded.partition(":")[0]


def read_body(kind: str, raw: bytes, encoding: str | None) -> Body:
    """The body as sent (inflated, within MAX_BODY_BYTES), within Segment's batch limit, as
    JSON, as messages. Raises in Segment's terms for what Segment refuses."""
    body = inflate(raw, encoding, MAX_BODY_BYTES)
    if len(body) > MAX_BATCH_BYTES:
        raise BadRequest(
            f"the request is {len(body)} bytes; the maximum is {MAX_BATCH_BYTES} bytes"
            " (500 KB) per request",
            error="payload_too_large",
        )
    if not body.strip():
        raise BadRequest("the body is empty; send a JSON object", error="invalid_json")
    try:
        data = decode(body)
    except MessageError:
        raise BadRequest("Invalid JSON", error="invalid_json") from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object", error="invalid_json")
    out = _batch(data) if kind == BATCH else _single(kind, data)
    out.size = len(body)
    return out


def _batch(data: dict[str, Any]) -> Body:
    items = data.get("batch")
    if not isinstance(items, list) or not items:
        raise BadRequest("batch must be a non-empty array of messages", error="invalid_batch")
    if len(items) > MAX_BATCH_MESSAGES:
        raise BadRequest(
            f"the batch holds {len(items)} messages; at most {MAX_BATCH_MESSAGES} are accepted"
            " per request",
            error="too_many_messages",
        )
    return Body(
        items,
        write_key=data.get("writeKey"),
        sent_at=data.get("sentAt"),
        context=data.get("context"),
        integrations=data.get("integrations"),
    )


def _single(kind: str, data: dict[str, Any]) -> Body:
    # The route names the call's type, whatever the body says (as /v1/track does).
    return Body([{**data, "type": kind}], write_key=data.get("writeKey"))


def as_segment_would(body: Body) -> list[Any]:
    """Each message as Segment's edge would make it before storing it (module docstring)."""
    return [_edge(m, body) if isinstance(m, dict) else m for m in body.messages]


def _edge(message: dict[str, Any], body: Body) -> dict[str, Any]:
    out = dict(message)
    out.pop("writeKey", None)
    for name in ("context", "integrations"):
        envelope, own = getattr(body, name), out.get(name)
        if isinstance(envelope, dict) and (own is None or isinstance(own, dict)):
            out[name] = {**envelope, **(own or {})}
    sent_at = out.pop("sentAt", None) or body.sent_at
    _timestamps(out, parse_time(sent_at), body.received_at)
    return out


def _timestamps(message: dict[str, Any], sent_at: datetime | None, received_at: datetime) -> None:
    message["receivedAt"] = _iso(received_at)
    given = message.get("timestamp") or message.get("originalTimestamp")
    original = parse_time(given)
    if original is None:
        return  # absent: normalise() fills in now; unreadable: validation says so
    message["originalTimestamp"] = given
    # A skew that would leave the calendar is left uncorrected.
    with contextlib.suppress(OverflowError):
        if sent_at is not None:
            message["timestamp"] = _iso(received_at - (sent_at - original))


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def check_prepared(kind: str, ready: list[Ready], rejected: list[dict[str, Any]]) -> None:
    """Refuse the call when Segment would: a message over 32 KB refuses the whole request;
    so does a call where no message is valid. A batch's other invalid messages are listed in
    the answer, and its valid ones kept."""
    for r in ready:
        if reason := oversized(len(r.encoded)):
            raise BadRequest(reason, error="message_too_large")
    if ready:
        return
    if kind != BATCH or len(rejected) == 1:
        first = rejected[0]
        raise BadRequest(first["detail"], error=first["error"])
    raise BadRequest("no message in the batch is valid", error="invalid_batch", **listed(rejected))


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
        self._keys = keys or KeyCache("source", ttl=0)  # never trusted: always the database
        self._sessions = sessions
        self._deadline = settings.webhook_deadline_seconds
        self._gate = KeyGate(settings.auth_failures_per_minute)

    async def receive(
        self, call: Call, read: Callable[[], Awaitable[bytes]], hold: Callable[[int], None]
    ) -> Accepted:
        """Authenticate, read (`read`: the body within the byte budget; `hold`: what the
        request holds of the budget, grown to count the inflated body too), check, publish."""
        deadline = asyncio.get_running_loop().time() + self._deadline
        key = basic_user(call.authorization)
        if key is None:
            read_in = await self._keyed_in_body(call, read, deadline)
        else:
            read_in = await self._keyed_in_header(call, key, read, deadline)
        if call.content_encoding:
            hold(read_in.raw_size + read_in.body.size)
        check_prepared(call.kind, *read_in.prepared)
        published = await within(deadline, self._commit(read_in.source, *read_in.prepared))
        return Accepted(published, read_in.origin)

    async def _keyed_in_header(
        self, call: Call, key: str, read: Callable[[], Awaitable[bytes]], deadline: float
    ) -> ReadIn:
        """Authenticated (and the origin checked) before a byte of the body is read; then
        the body is read and its messages prepared in one go."""
        source = await self.authenticate(key, call.client, deadline)
        origin = self._origin(call.origin, source)
        raw = await read()
        body, prepared = await _off_loop(_weight(call, raw), _read_and_prepare, call, raw)
        return ReadIn(source, origin, body, prepared, len(raw))

    async def _keyed_in_body(
        self, call: Call, read: Callable[[], Awaitable[bytes]], deadline: float
    ) -> ReadIn:
        """The key can only be read from the body: read it, authenticate, then prepare. A
        body refused before its key could be read is a failed authentication too: else
        unreadable bodies would be the one unthrottled way to make us read and inflate."""
        try:
            raw = await read()
            body = await _off_loop(
                _weight(call, raw), read_body, call.kind, raw, call.content_encoding
            )
        except AppError as exc:
            if 400 <= exc.status_code < 500:
                self._failed(call.client)
            raise
        source = await self.authenticate(body.write_key, call.client, deadline)
        origin = self._origin(call.origin, source)
        prepared = await _off_loop(body.size, _prepare, body)
        return ReadIn(source, origin, body, prepared, len(raw))

    async def authenticate(self, key: Any, client: str, deadline: float) -> SourceMatch:
        """The key's environment. The key is looked up first, whatever this address did
        before: someone else's failures from a shared address never refuse a working key.
        A missing or unknown key is a failure, and past the address's budget it gets 429."""
        given = isinstance(key, str) and bool(key)
        source = await self._lookup(key, deadline) if given else None
        if source is not None:
            return source
        self._failed(client)
        if not given:
            raise Unauthorized(
                "no write key: send it as the HTTP Basic user name (empty password), or as"
                " writeKey in the body",
                error="missing_write_key",
            )
        raise Unauthorized("Invalid write key", error="invalid_write_key")

    def _failed(self, client: str) -> None:
        """Count a failed authentication; past the address's budget, refuse it with 429."""
        if wait := self._gate.failure(client):
            raise TooManyRequests(
                "too many requests without a valid write key from this address; retry later",
                error="too_many_failures",
                retry_after=wait,
            )

    async def _lookup(self, key: str, deadline: float) -> SourceMatch | None:
        digest = hash_key(key)
        return self._keys.get(digest) or await within(deadline, self._find(digest))

    async def _find(self, digest: str) -> SourceMatch | None:
        since = self._keys.since()
        async with driver_connection(self._engine) as pg:
            source = await find_by_source_write_key(pg, digest)
        if source is not None:
            self._keys.remember(digest, source, since)
        return source

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
        self, source: SourceMatch, ready: list[Ready], rejected: list[dict[str, Any]]
    ) -> Published:
        async with transaction(self._sessions) as session:
            # The stream switch and the copy option as of this transaction, not the lookup.
            env = await publishing(session, source.id)
            if env is None:  # deleted since its key was looked up
                raise Unauthorized("Invalid write key", error="invalid_write_key")
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


def _prepare(body: Body) -> Prepared:
    return prepare(as_segment_would(body), body.received_at, keep_library=True)


def _read_and_prepare(call: Call, raw: bytes) -> tuple[Body, Prepared]:
    body = read_body(call.kind, raw, call.content_encoding)
    return body, _prepare(body)


async def _off_loop(size: int, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`fn` here for a small body, in a thread for a large one: a 500 KB batch takes tens of
    milliseconds to validate, which would hold every other request on this event loop."""
    if size > THREAD_ABOVE_BYTES:
        return await asyncio.to_thread(fn, *args, **kwargs)
    return fn(*args, **kwargs)
