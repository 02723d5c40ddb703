"""Reading request bodies within limits: the body limit per request (413) and a byte budget
per process (503 with Retry-After), compressed bodies inflated within a limit too; parsing them
as JSON, off the event loop when they are large, with a message error answered as the one 400.
Every door (the webhook, the /v1 intake, the admin API, the console) reads its body here."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

from starlette.requests import ClientDisconnect, Request

from integration.config import KIB
from integration.errors import (
    BadRequest,
    ClientGone,
    PayloadTooLarge,
    Unavailable,
    UnsupportedMediaType,
)
from integration.spec import MessageError, decode

P = ParamSpec("P")
T = TypeVar("T")
# What a door's service is handed to read its request's body when its turn comes (after the key
# is checked): `read_bounded` on the request, within the door's limit and the byte budget.
BodyReader = Callable[[], Awaitable[bytes]]

# Bodies above this are inflated, parsed and validated in a thread: a 500 KB batch takes tens
# of milliseconds to validate, which would hold every other request on this event loop.
THREAD_ABOVE_BYTES = 64 * KIB


class ByteBudget:
    """Bytes of request bodies this process holds at once. Past the budget a request is told to
    come back (503 with Retry-After) instead of being read: memory stays bounded whatever
    arrives at the same time. One request alone is always admitted up to the body limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    @contextmanager
    def reserve(self) -> Iterator[Reservation]:
        held = Reservation(self)
        try:
            yield held
        finally:
            self.used -= held.size

    def _grow(self, held: Reservation, size: int) -> None:
        extra = size - held.size
        if extra <= 0:
            return
        if self.used and self.used + extra > self.limit:
            raise Unavailable(
                "the server is receiving too much at once; retry shortly",
                error="overloaded",
                retry_after=2,
            )
        self.used += extra
        held.size = size


class Reservation:
    """The share of a ByteBudget one request holds until it is answered."""

    def __init__(self, budget: ByteBudget) -> None:
        self.budget = budget
        self.size = 0

    def grow(self, size: int) -> None:
        self.budget._grow(self, size)


async def read_bounded(request: Request[Any], limit: int, held: Reservation | None = None) -> bytes:
    """Read the body, refusing with 413 as soon as it passes `limit` bytes, and with 503 when
    the process's byte budget (if given) cannot hold it."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit():
        if int(declared) > limit:
            raise PayloadTooLarge(f"body is {declared} bytes; the limit is {limit} bytes")
        if held is not None:
            held.grow(int(declared))
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"body is over the limit of {limit} bytes")
            if held is not None:
                held.grow(size)
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientGone("the client disconnected before its body was read") from None
    return b"".join(chunks)


GZIP = ("gzip", "x-gzip")
# zlib's window bits for a gzip header and trailer around the deflate stream.
GZIP_WBITS = 16 + zlib.MAX_WBITS
# A gzip body may be several members one after another (RFC 1952), which some writers make
# when they append; Segment's libraries send one. Past this many the body is refused: each
# member costs a fresh inflater, and 1 MB holds some 50,000 empty ones.
MAX_GZIP_MEMBERS = 64
# Compressed bytes handed to zlib at a time. At a member's end zlib copies whatever it was
# given past that end (`unused_data`): given the whole body, that copy was the rest of the
# body once per member, quadratic (49,000 empty members in 1 MB took 1.8 s). Fed in pieces,
# each member copies at most one piece, and inflating is linear in the body's size.
FEED_BYTES = 16 * 1024


def inflate(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body as sent before its Content-Encoding (none, or gzip), refusing with 413 as soon
    as it inflates past `limit` bytes: a small body that would inflate to gigabytes (a gzip
    bomb) costs at most `limit` bytes and the time to inflate them."""
    coding = (encoding or "identity").strip().lower()
    if coding == "identity":
        return body
    if coding not in GZIP:
        raise UnsupportedMediaType(
            f"Content-Encoding {coding[:40]!r} is not supported; send gzip or no encoding",
            error="unsupported_encoding",
        )
    return gunzip(body, limit)


def gunzip(body: bytes, limit: int) -> bytes:
    """Every gzip member of `body`, inflated, in time linear in its size (FEED_BYTES)."""
    data, out, at, members = memoryview(body), bytearray(), 0, 0
    while at < len(data):
        members += 1
        if members > MAX_GZIP_MEMBERS:
            raise BadRequest(
                f"the gzip body has more than {MAX_GZIP_MEMBERS} members; send one",
                error="invalid_gzip",
            )
        at = _inflate_member(data, at, out, limit)
    return bytes(out)


def _inflate_member(data: memoryview, at: int, out: bytearray, limit: int) -> int:
    """Inflate the gzip member that starts at `data[at]` onto `out`, keeping `out` within
    `limit` bytes; return where the member ends."""
    inflater = zlib.decompressobj(GZIP_WBITS)
    while not inflater.eof:
        if at >= len(data):
            raise BadRequest("the gzip body ends before its stream does", error="invalid_gzip")
        piece = data[at : at + FEED_BYTES]
        try:
            out += inflater.decompress(piece, limit - len(out) + 1)
        except zlib.error:
            raise BadRequest("the body is not valid gzip", error="invalid_gzip") from None
        if len(out) > limit or inflater.unconsumed_tail:
            raise PayloadTooLarge(
                "the body inflates past the limit on what is read of a request",
                error="body_too_large",
            )
        at += len(piece) - len(inflater.unused_data)
    return at


async def off_loop(size: int, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`fn` here for a body of `size` bytes up to THREAD_ABOVE_BYTES, in a thread above."""
    if size > THREAD_ABOVE_BYTES:
        return await asyncio.to_thread(fn, *args, **kwargs)
    return fn(*args, **kwargs)


def bad_request(exc: MessageError, detail: str | None = None, **extra: Any) -> BadRequest:
    """A message error as the 400 it is answered with (`detail`: a door's own sentence
    instead of the error's): the one place where a MessageError becomes an answer."""
    return BadRequest(detail or exc.detail, error=exc.error, **extra)


@contextmanager
def message_errors(detail: str | None = None) -> Iterator[None]:
    """Within it, a MessageError is raised as its 400 (`bad_request`, with `detail`)."""
    try:
        yield
    except MessageError as exc:
        raise bad_request(exc, detail) from None


def json_of(body: bytes, *, empty: str, invalid: str | None = None) -> Any:
    """The body as JSON: 400 when it is empty (`empty` says what to send) or not JSON
    (`invalid`: a door's own sentence for it, else the parser's)."""
    if not body.strip():
        raise BadRequest(empty, error="invalid_json")
    with message_errors(invalid):
        data = decode(body)
    return data


async def read_json(request: Request[Any], limit: int) -> Any:
    return json_of(await read_bounded(request, limit), empty="body is empty; send a JSON object")
