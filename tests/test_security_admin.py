"""The admin API's own hardening: a webhook key rotated with grace 0 is revoked at once
(issue #15.7), and no route holds a body past its limit (issue #15.8)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import processes
from tests.admin_support import create_environment, error, ok, send
from tests.conftest import ADMIN_TOKEN
from tests.segment_payloads import identify, new_id

MIB = 1024 * 1024


# --- zero-grace rotation ----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["query", "body"])
async def test_rotation_with_zero_grace_revokes_the_old_key_at_once(
    admin: httpx.AsyncClient, http: httpx.AsyncClient, how: str
) -> None:
    created = await create_environment(admin)
    old_key = created["webhook_key"]
    await send(http, f"/webhooks/segment/{old_key}", identify(new_id("user"), {}))

    path = f"/api/environments/{created['id']}/rotate-webhook-key"
    if how == "query":
        rotated = ok(await admin.post(path, params={"grace_seconds": 0}))
    else:
        rotated = ok(await admin.post(path, json={"grace_seconds": 0}))
    assert rotated["previous_key_valid_until"] is None

    refused = await http.post(f"/webhooks/segment/{old_key}", json=identify(new_id("user"), {}))
    error(refused, 401)
    new_key = rotated["webhook_key"]
    await send(http, f"/webhooks/segment/{new_key}", identify(new_id("user"), {}))


async def test_rotation_takes_the_grace_it_is_given(
    admin: httpx.AsyncClient, http: httpx.AsyncClient
) -> None:
    created = await create_environment(admin)
    path = f"/api/environments/{created['id']}/rotate-webhook-key"
    before = datetime.now(UTC)
    rotated = ok(await admin.post(path, params={"grace_seconds": 600}))
    until = datetime.fromisoformat(rotated["previous_key_valid_until"])
    assert before + timedelta(seconds=590) < until < datetime.now(UTC) + timedelta(seconds=610)
    answer = await http.post(
        f"/webhooks/segment/{created['webhook_key']}", json=identify(new_id("user"), {})
    )
    assert answer.status_code == 200  # still within its ten minutes


@pytest.mark.parametrize(
    ("params", "body"),
    [
        ({"grace_seconds": "-1"}, None),
        ({"grace_seconds": "soon"}, None),
        ({"grace_seconds": "1.5"}, None),
        ({"grace_seconds": str(366 * 24 * 3600)}, None),
        (None, {"grace_seconds": -1}),
        (None, {"grace_seconds": True}),
        (None, {"grace_seconds": "0"}),
        (None, {"grace": 0}),
        ({"grace_seconds": "0"}, {"grace_seconds": 0}),
    ],
)
async def test_an_invalid_grace_is_refused_and_rotates_nothing(
    admin: httpx.AsyncClient, http: httpx.AsyncClient, params: Any, body: Any
) -> None:
    created = await create_environment(admin)
    path = f"/api/environments/{created['id']}/rotate-webhook-key"
    refused = error(await admin.post(path, params=params, json=body), 400)
    assert refused["field"] in ("grace_seconds", "grace")
    await send(http, f"/webhooks/segment/{created['webhook_key']}", identify(new_id("u"), {}))


# --- bounded bodies ---------------------------------------------------------------------------


def _peak_rss_reset(pid: int) -> None:
    """From now on, VmHWM is the peak of the resident set from this moment (Linux 4.0+)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field}")


async def _post_streamed(port: int, path: str, total: int, *, declare: bool) -> tuple[int, int]:
    """POST `total` bytes of JSON-ish filler, chunked (or with Content-Length when `declare`),
    until the server answers; the status and how much was sent by then."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    framing = f"Content-Length: {total}" if declare else "Transfer-Encoding: chunked"
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
        f"Content-Type: application/json\r\n{framing}\r\n\r\n".encode()
    )
    answer = asyncio.ensure_future(reader.readline())
    sent, chunk = 0, b" " * (256 * 1024)
    try:
        while sent < total and not answer.done():
            part = chunk if declare else b"%x\r\n%s\r\n" % (len(chunk), chunk)
            writer.write(part)
            await writer.drain()
            sent += len(chunk)
        if not declare and not answer.done():
            writer.write(b"0\r\n\r\n")
            await writer.drain()
    except ConnectionError:
        pass  # the server answered and closed while we were still sending
    status_line = await asyncio.wait_for(answer, 30)
    writer.close()
    return int(status_line.split()[1]), sent


@pytest.mark.parametrize("declare", [False, True], ids=["chunked", "content-length"])
async def test_a_50_mib_body_to_replay_is_refused_without_holding_it(
    admin: httpx.AsyncClient, server: processes.Process, declare: bool
) -> None:
    created = await create_environment(admin)
    path = f"/api/environments/{created['id']}/deliveries/replay"
    assert server.proc is not None and server.port is not None
    pid = server.proc.pid
    _peak_rss_reset(pid)
    baseline = _status(pid, "VmRSS")
    status, sent = await _post_streamed(server.port, path, 50 * MIB, declare=declare)
    growth = _status(pid, "VmHWM") - baseline
    assert status == 413
    print(
        f"replay, 50 MiB {'declared' if declare else 'chunked'}: sent {sent / MIB:.1f} MiB "
        f"before the 413, peak RSS growth {growth / MIB:.1f} MiB"
    )
    assert growth < 20 * MIB, f"RSS grew {growth / MIB:.1f} MiB"
    # The route still works with a body within the limit, and with none.
    assert ok(await admin.post(path, json={"ids": [1]}))["replayed"] == 0
    assert ok(await admin.post(path))["replayed"] == 0


@pytest.mark.parametrize(
    "route",
    [
        "/api/environments",
        "/api/environments/{id}",
        "/api/environments/{id}/rotate-webhook-key",
        "/api/environments/{id}/deliveries/replay",
        "/api/environments/{id}/product-events",
    ],
)
async def test_every_admin_route_that_reads_a_body_has_a_limit(
    admin: httpx.AsyncClient, server: processes.Process, route: str
) -> None:
    created = await create_environment(admin)
    path = route.format(id=created["id"])
    method = "PATCH" if route.endswith("{id}") else "POST"
    response = await admin.request(method, path, content=b" " * (11 * MIB))
    assert error(response, 413)["error"] == "body_too_large"
