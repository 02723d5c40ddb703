"""One door for environment changes (issue #22): the admin API, the console and the CLI all
change settings and rotate keys through outbound.events, so each change is announced in the
environment's own stream whoever makes it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import select

from integration.outbound.events import (
    SOURCE_WRITE_KEY_ROTATED,
    STREAM_ENABLED,
    WEBHOOK_KEY_ROTATED,
    WRITE_KEY_CHANGED,
)
from integration.store.db import SessionMaker
from integration.store.models import OutboxMessage
from tests import harness, processes
from tests.admin_support import ok
from tests.console_support import sign_in_http
from tests.outbound_support import cli, stop_streams
from tests.segment_payloads import MakeEnv


@pytest.fixture
async def streaming(
    make_environment: MakeEnv, sessions: SessionMaker
) -> AsyncIterator[harness.TestEnvironment]:
    """An environment streaming to a closed port (nothing leaves this machine), turned off
    afterwards so that no later worker keeps retrying it."""
    env = await make_environment(
        "door",
        segment_write_key="wk_" + uuid.uuid4().hex,
        segment_api_url="http://127.0.0.1:9",
        stream_enabled=True,
    )
    yield env
    await stop_streams(sessions, [env.id])


async def announced(sessions: SessionMaker, env: harness.TestEnvironment) -> list[str]:
    """The platform's own events in the environment's outbox, oldest first."""
    async with sessions() as session:
        rows = await session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.environment_id == env.id)
            .order_by(OutboxMessage.id)
        )
        return [row.payload["event"] for row in rows]


async def test_the_admin_api_announces_its_changes(
    admin: httpx.AsyncClient, streaming: harness.TestEnvironment, sessions: SessionMaker
) -> None:
    at = f"/api/environments/{streaming.id}"
    ok(await admin.patch(at, json={"segment_write_key": "wk_" + uuid.uuid4().hex}))
    ok(await admin.post(f"{at}/rotate-webhook-key?grace_seconds=0"))
    ok(await admin.post(f"{at}/rotate-source-write-key?grace_seconds=0"))
    assert await announced(sessions, streaming) == [
        STREAM_ENABLED,
        WRITE_KEY_CHANGED,
        WEBHOOK_KEY_ROTATED,
        SOURCE_WRITE_KEY_ROTATED,
    ]


async def test_the_console_announces_its_changes(
    server: processes.Process, streaming: harness.TestEnvironment, sessions: SessionMaker
) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        csrf = await sign_in_http(client)
        for action in ("rotate", "rotate-intake-key"):
            answer = await client.post(
                f"/admin/environments/{streaming.id}/{action}",
                data={"csrf": csrf, "grace_seconds": "0"},
            )
            assert answer.status_code == 200, answer.text
    assert await announced(sessions, streaming) == [
        STREAM_ENABLED,
        WEBHOOK_KEY_ROTATED,
        SOURCE_WRITE_KEY_ROTATED,
    ]


async def test_the_cli_announces_its_changes(
    env_vars: dict[str, str], streaming: harness.TestEnvironment, sessions: SessionMaker
) -> None:
    name = streaming.name
    commands = [
        ("env", "set", name, "--write-key", "wk_" + uuid.uuid4().hex),
        ("env", "rotate-key", name, "--grace-seconds", "0"),
        ("env", "rotate-source-write-key", name, "--grace-seconds", "0"),
    ]
    for command in commands:
        done = await cli(env_vars, *command)
        assert done.code == 0, done
    assert await announced(sessions, streaming) == [
        STREAM_ENABLED,
        WRITE_KEY_CHANGED,
        WEBHOOK_KEY_ROTATED,
        SOURCE_WRITE_KEY_ROTATED,
    ]
