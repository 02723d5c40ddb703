"""Helpers for the /v1 intake's tests (not a test module itself): Segment's own Python library
pointed at our server, the Node one run with node, and hand-made Tracking API requests for the
cases no library would send."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from segment.analytics import Client

from tests.harness import TestEnvironment
from tests.processes import ROOT

JS = ROOT / "tests" / "js"
NODE_SCRIPT = JS / "analytics_node.mjs"


def basic(write_key: str) -> dict[str, str]:
    """Segment's scheme: the write key as the HTTP Basic user name, an empty password."""
    return {"Authorization": "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()}


@contextmanager
def segment_client(url: str, env: TestEnvironment, **options: Any) -> Iterator[Client]:
    """`Client(write_key, host=OUR_URL)`, as analytics-python's docs set it up, shut down
    (flushed, its thread joined) afterwards."""
    client = Client(env.source_write_key, host=url, **options)
    try:
        yield client
    finally:
        if not options.get("sync_mode"):  # a synchronous client has no thread to stop
            client.shutdown()


async def flush(client: Client) -> None:
    """The library's flush() blocks until its queue is sent: off the event loop, so the
    in-process worker keeps running meanwhile."""
    await asyncio.to_thread(client.flush)


def run_id() -> str:
    return uuid.uuid4().hex[:10]


def node_available() -> None:
    """Skip, saying why, where node or the installed analytics-node is missing."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed: the analytics-node tests need it")
    if not (JS / "node_modules" / "@segment" / "analytics-node").is_dir():
        pytest.skip("tests/js/node_modules is missing: `make js` installs analytics-node (npm)")


async def analytics_node(
    host: str, write_key: str, calls: list[dict[str, Any]], **options: Any
) -> dict[str, Any]:
    """Run the calls with @segment/analytics-node in node; what it requested and its errors."""
    payload = json.dumps(
        {"host": host, "writeKey": write_key, "calls": calls, "options": options}
    ).encode()

    def run() -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["node", str(NODE_SCRIPT)],
            input=payload,
            capture_output=True,
            timeout=60,
            check=False,
            cwd=JS,
        )

    done = await asyncio.to_thread(run)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


async def post(
    http: httpx.AsyncClient,
    path: str,
    body: Any = None,
    *,
    key: str | None = None,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """A hand-made Tracking API request (for what no library would send)."""
    sent = {**(basic(key) if key else {}), **(headers or {})}
    if content is not None:
        return await http.post(path, content=content, headers=sent)
    return await http.post(path, json=body, headers=sent)


def segment_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The answer is Segment's error shape with this status and code."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["success"] is False and body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    return body
