"""The Segment API URL is not a way out (issue #15.3): only Segment's hosts and the operator's
allowlist, a new host needs the write key again, and no remote answer body reaches a caller
(test-connection, deliveries), read only a few KB at a time under one deadline."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import orjson
import pytest

from integration.config import Settings
from integration.store.db import SessionMaker
from tests.admin_support import create_environment, environment_row, error, ok
from tests.conftest import wait_for
from tests.outbound_support import cli, new_write_key, outbox, running_worker, stop_streams
from tests.segment_payloads import MakeEnv
from tests.sink import SegmentSink

US = "https://api.segment.io"
EU = "https://events.eu1.segmentapis.com"


@dataclass
class RawSegment:
    """A TCP server on 127.0.0.1 that answers every request with whatever `answer` writes:
    a host that misbehaves in ways an HTTP framework would not let it."""

    answer: Callable[[asyncio.StreamWriter], Awaitable[None]]
    written: int = 0
    requests: int = 0
    port: int = 0
    _server: asyncio.Server | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> RawSegment:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(
                next(
                    (
                        line.split(b":", 1)[1]
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    b"0",
                )
            )
            await reader.readexactly(length)
            self.requests += 1
            await self.answer(writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        await writer.drain()
        self.written += len(data)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()


@pytest.fixture
async def raw() -> AsyncIterator[Callable[..., Awaitable[RawSegment]]]:
    servers: list[RawSegment] = []

    async def make(
        answer: Callable[[RawSegment, asyncio.StreamWriter], Awaitable[None]],
    ) -> RawSegment:
        server = RawSegment(lambda w: answer(server, w))
        servers.append(await server.start())
        return server

    yield make
    for server in servers:
        await server.stop()


def json_answer(status: int, body: bytes) -> bytes:
    reason = {200: "OK", 400: "Bad Request"}.get(status, "Error")
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


LEAK = "internal-" + uuid.uuid4().hex  # what a hostile or confused host puts in its answer
CHATTY = orjson.dumps(
    {
        "success": False,
        "message": "Invalid batch: " + "m" * 1000,
        "code": "invalid_request",
        "debug": LEAK,
        "echo": {"headers": LEAK},
    }
)


# --- which hosts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://segment-proxy.example.com",  # not allowlisted
        "http://169.254.169.254",  # a cloud metadata service
        "http://localhost:8080",  # the allowlist names 127.0.0.1, not localhost
        "https://api.segment.io.attacker.example",
        "http://api.segment.io",  # Segment over plain http would show the key to the path
        "https://api.segment.io:8443",
        "https://api.segment.io/v1",  # a path
        "https://api.segment.io/?x=1",
        "https://api.segment.io#frag",
        "https://key:secret@api.segment.io",  # userinfo
        "http://127.0.0.1:1/collect",  # an allowed host, with a path
        "http://127.0.0.1:99999",  # not a port
    ],
)
async def test_only_segment_hosts_and_the_allowlist_are_accepted(
    admin: httpx.AsyncClient, url: str
) -> None:
    created = await create_environment(admin)
    env_path = f"/api/environments/{created['id']}"
    refused = error(await admin.patch(env_path, json={"segment_api_url": url}), 400)
    assert refused["field"] == "segment_api_url"
    assert ok(await admin.get(env_path))["segment_api_url"] == US
    error(
        await admin.post(
            "/api/environments", json={"name": f"x-{uuid.uuid4().hex[:8]}", "segment_api_url": url}
        ),
        400,
    )


def test_allowlist_setting_takes_hosts_only() -> None:
    assert Settings(
        segment_api_allowlist=" Proxy.Internal, 10.0.0.7,[::1] ,"
    ).segment_api_hosts == {
        "proxy.internal",
        "10.0.0.7",
        "::1",
    }
    for bad in ("https://proxy.internal", "proxy.internal:8080", "proxy.internal/path"):
        with pytest.raises(ValueError, match="is not a host name"):
            Settings(segment_api_allowlist=bad)


# --- a new host needs the write key again -----------------------------------------------------


async def test_a_new_host_needs_the_write_key_in_the_same_change(
    admin: httpx.AsyncClient, sink: SegmentSink, sessions: SessionMaker, settings: Settings
) -> None:
    write_key = new_write_key()
    created = await create_environment(admin, segment_write_key=write_key, segment_api_url=sink.url)
    env_path = f"/api/environments/{created['id']}"

    for elsewhere in ("eu", "http://127.0.0.1:1", sink.url.replace("http:", "https:")):
        refused = error(await admin.patch(env_path, json={"segment_api_url": elsewhere}), 400)
        assert (refused["error"], refused["field"]) == ("write_key_required", "segment_write_key")
        assert ok(await admin.get(env_path))["segment_api_url"] == sink.url

    # The same host is no change; a new host with the key given again is.
    ok(await admin.patch(env_path, json={"segment_api_url": sink.url + "/"}))
    other_key = new_write_key()
    moved = ok(
        await admin.patch(env_path, json={"segment_api_url": "eu", "segment_write_key": other_key})
    )
    assert (moved["segment_api_url"], moved["segment_write_key"]) == (EU, "…" + other_key[-4:])
    cleared = ok(
        await admin.patch(env_path, json={"segment_api_url": "us", "segment_write_key": None})
    )
    assert (cleared["segment_api_url"], cleared["segment_write_key"]) == (US, None)
    row = await environment_row(sessions, created["id"])
    assert row is not None and row.segment_write_key is None
    # Without a stored key there is nothing to protect: the host may change alone.
    ok(await admin.patch(env_path, json={"segment_api_url": "eu"}))


async def test_env_set_refuses_a_new_host_without_the_write_key(
    env_vars: dict[str, str], make_environment: MakeEnv, sink: SegmentSink
) -> None:
    env = await make_environment(segment_write_key=new_write_key(), segment_api_url=sink.url)
    name = env.name
    refused = await cli(env_vars, "env", "set", name, "--segment-api-url", "eu")
    assert refused.code != 0 and "segment_write_key" in refused.out, refused
    assert "Traceback" not in refused.out


# --- no remote body reaches a caller ----------------------------------------------------------


async def test_connection_test_shows_only_segments_error_field_capped(
    admin: httpx.AsyncClient, raw: Callable[..., Awaitable[RawSegment]]
) -> None:
    async def chatty(server: RawSegment, writer: asyncio.StreamWriter) -> None:
        await server.write(writer, json_answer(400, CHATTY))

    host = await raw(chatty)
    created = await create_environment(
        admin, segment_write_key=new_write_key(), segment_api_url=host.url
    )
    response = await admin.post(f"/api/environments/{created['id']}/test-connection")
    result = ok(response)
    assert (result["ok"], result["status"]) == (False, 400)
    assert result["response"] == ("Invalid batch: " + "m" * 1000)[:200]
    assert result["summary"].startswith("Segment refused the test event (HTTP 400: Invalid batch")
    assert LEAK not in response.text and "m" * 201 not in response.text


async def test_connection_test_reads_a_few_kb_under_one_deadline(
    admin: httpx.AsyncClient, raw: Callable[..., Awaitable[RawSegment]]
) -> None:
    """A host that answers with an endless body, and one that drips it a byte at a time:
    test-connection stops reading after a few KB, and answers within SEGMENT_TIMEOUT_SECONDS
    (2 s in the tests), however slowly the bytes come."""

    async def endless(server: RawSegment, writer: asyncio.StreamWriter) -> None:
        await server.write(
            writer,
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000000\r\n\r\n",
        )
        chunk = b'{"success":true,"pad":"' + b"x" * 65536
        while server.written < 1_000_000_000:
            await server.write(writer, chunk)

    async def drip(server: RawSegment, writer: asyncio.StreamWriter) -> None:
        await server.write(writer, b"HTTP/1.1 400 Bad Request\r\nContent-Length: 100000\r\n\r\n{")
        for _ in range(100_000):
            await asyncio.sleep(0.2)
            await server.write(writer, b" ")

    flood = await raw(endless)
    slow = await raw(drip)
    for host in (flood, slow):
        created = await create_environment(
            admin, segment_write_key=new_write_key(), segment_api_url=host.url
        )
        started = time.monotonic()
        result = ok(await admin.post(f"/api/environments/{created['id']}/test-connection"))
        elapsed = time.monotonic() - started
        assert elapsed < 4, f"test-connection took {elapsed:.1f}s"
        assert host.requests == 1
        if host is flood:
            assert (result["ok"], result["status"]) == (True, 200)
            # The server stops reading: what was written is what the sockets' buffers hold.
            await asyncio.sleep(0.5)
            assert flood.written < 32 * 1024 * 1024, flood.written
        else:
            assert (result["ok"], result["status"]) == (False, None)
            assert "timed out" in result["summary"]


async def test_deliveries_keep_only_segments_error_fields(
    admin: httpx.AsyncClient,
    env_vars: dict[str, str],
    make_environment: MakeEnv,
    raw: Callable[..., Awaitable[RawSegment]],
    sessions: SessionMaker,
) -> None:
    async def chatty(server: RawSegment, writer: asyncio.StreamWriter) -> None:
        await server.write(writer, json_answer(400, CHATTY))

    host = await raw(chatty)
    env = await make_environment(
        segment_write_key=new_write_key(), segment_api_url=host.url, stream_enabled=True
    )
    env_id = env.id
    try:
        body = {"type": "track", "userId": "u1", "event": "Flow Started"}
        ok(await admin.post(f"/api/environments/{env_id}/product-events", json=body), 202)
        async with running_worker(env_vars):

            async def dead() -> bool:
                rows = await outbox(sessions, env_id)
                return bool(rows) and all(r.status == "dead" for r in rows)

            await wait_for(dead)
        response = await admin.get(f"/api/environments/{env_id}/deliveries")
        items = ok(response)["items"]
        assert items and LEAK not in response.text
        for item in items:
            assert orjson.loads(item["response_body"]) == {
                "success": False,
                "code": "invalid_request",
                "message": ("Invalid batch: " + "m" * 1000)[:200],
            }
            assert item["last_error"] == (
                "Segment refused the batch: HTTP 400: " + ("Invalid batch: " + "m" * 1000)[:200]
            )
    finally:
        await stop_streams(sessions, [env_id])


# --- the worker sends only to allowed hosts ---------------------------------------------------


async def test_worker_holds_events_for_a_host_no_longer_allowed(
    admin: httpx.AsyncClient,
    env_vars: dict[str, str],
    make_environment: MakeEnv,
    sink: SegmentSink,
    sessions: SessionMaker,
    settings: Settings,
) -> None:
    """The environment was set up while 127.0.0.1 was allowed; this worker's allowlist no
    longer names it. Nothing is sent (so the write key goes nowhere): the rows stay pending
    with the reason, retried on the backoff schedule, until the URL or the allowlist is fixed."""
    write_key = new_write_key()
    sink.write_keys.add(write_key)
    env = await make_environment(
        segment_write_key=write_key, segment_api_url=sink.url, stream_enabled=True
    )
    env_id = env.id
    try:
        body = {"type": "track", "userId": "u1", "event": "Flow Started"}
        ok(await admin.post(f"/api/environments/{env_id}/product-events", json=body), 202)
        async with running_worker(env_vars, SEGMENT_API_ALLOWLIST=""):

            async def held() -> bool:
                rows = await outbox(sessions, env_id)
                return bool(rows) and all(r.last_error for r in rows)

            await wait_for(held)
            await asyncio.sleep(1)
        rows = await outbox(sessions, env_id)
        assert {r.status for r in rows} == {"pending"}
        assert all("SEGMENT_API_ALLOWLIST" in (r.last_error or "") for r in rows)
        assert sink.requests == 0

        # With the host allowed again, the same rows go out.
        async with running_worker(env_vars):
            await wait_for(lambda: len(sink.received) >= len(rows))
    finally:
        await stop_streams(sessions, [env_id])


async def test_env_test_refuses_a_host_no_longer_allowed(
    env_vars: dict[str, str], make_environment: MakeEnv, sink: SegmentSink
) -> None:
    write_key = new_write_key()
    sink.write_keys.add(write_key)
    env = await make_environment(segment_write_key=write_key, segment_api_url=sink.url)
    refused = await cli({**env_vars, "SEGMENT_API_ALLOWLIST": ""}, "env", "test", env.name)
    assert refused.code != 0 and "SEGMENT_API_ALLOWLIST" in refused.out, refused
    assert sink.requests == 0
    allowed = await cli(env_vars, "env", "test", env.name)
    assert allowed.code == 0 and sink.requests == 1, allowed
