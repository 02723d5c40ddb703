"""Each API process remembers which environment a key opens (integration/environments/
key_cache.py). What a user must never notice: a key rotated, revoked or deleted, or a signing
secret set, anywhere (this process, another API process, the CLI, SQL) is in force for the
next request, not when a cache entry happens to expire. The servers here keep entries for an
hour (KEY_CACHE_SECONDS), so only the notifications can make these tests pass."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import text

from integration.config import Settings
from integration.crypto import SecretBox
from integration.environments.key_cache import KeyCache
from integration.environments.repository import KeyMatch
from integration.outbound import events
from integration.store.db import SessionMaker, transaction
from integration.store.models import Environment
from tests import processes
from tests.harness import TestEnvironment as Env
from tests.harness import wait_for
from tests.segment_payloads import MakeEnv, new_id, track
from tests.tcp_proxy import TcpProxy
from tests.test_operations import metrics_of, value

HOUR = "3600"
# A change made elsewhere reaches a process by NOTIFY within milliseconds; this is generous.
HEARD_WITHIN = 2.0


@pytest.fixture
async def cached_server(env_vars: dict[str, str]) -> AsyncIterator[processes.Process]:
    server = await asyncio.to_thread(processes.serve, env_vars, KEY_CACHE_SECONDS=HOUR)
    await listening(server, 1)
    yield server
    await asyncio.to_thread(server.stop)


async def metric(server: processes.Process, name: str, **labels: str) -> float:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        samples = metrics_of((await client.get("/metrics")).text).get(name.removesuffix("_total"))
    return value(samples or [], name, **labels)


async def listening(server: processes.Process, processes_: int) -> None:
    async def heard() -> bool:
        return await metric(server, "integration_key_cache_listening") == processes_

    await wait_for(heard, timeout=20)


async def status(server: processes.Process, key: str) -> int:
    # A connection per request: with several API processes, each may answer.
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        response = await client.post(f"/webhooks/segment/{key}", json=track(new_id("u"), "Seen"))
    return response.status_code


async def refused_within(server: processes.Process, key: str, seconds: float) -> float:
    """How long after now the key was first refused (401); fails after `seconds`."""
    start = time.monotonic()
    while (answer := await status(server, key)) != 401:
        assert answer == 200, answer
        assert time.monotonic() - start < seconds, f"{key[-4:]} still accepted after {seconds}s"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def rotate_elsewhere(sessions: SessionMaker, env: Env, grace: int = 0) -> str:
    """Rotate through the service in this (test) process: another process, to the server."""
    async with transaction(sessions) as session:
        row = await session.get(Environment, env.id)
        assert row is not None
        return (await events.rotate_webhook_key(session, row, grace_seconds=grace)).key


async def test_keys_are_answered_from_the_cache_once_seen(
    cached_server: processes.Process, make_environment: MakeEnv
) -> None:
    env = await make_environment()
    name = "integration_key_lookups_total"
    assert await status(cached_server, env.key) == 200  # looked up, then remembered
    hits = await metric(cached_server, name, kind="webhook", answered="cache")
    database = await metric(cached_server, name, kind="webhook", answered="database")
    for _ in range(5):
        assert await status(cached_server, env.key) == 200
    assert await metric(cached_server, name, kind="webhook", answered="cache") == hits + 5
    assert await metric(cached_server, name, kind="webhook", answered="database") == database


async def test_a_key_rotated_by_another_process_is_refused_at_once(
    cached_server: processes.Process, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment()
    assert await status(cached_server, env.key) == 200
    assert await status(cached_server, env.key) == 200  # from the cache
    new_key = await rotate_elsewhere(sessions, env)
    await refused_within(cached_server, env.key, HEARD_WITHIN)
    assert await status(cached_server, new_key) == 200


async def test_a_deleted_environment_is_refused_at_once(
    cached_server: processes.Process, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment()
    assert await status(cached_server, env.key) == 200
    async with transaction(sessions) as session:  # as an operator's SQL would
        await session.execute(text("DELETE FROM environments WHERE id = :id"), {"id": env.id})
    await refused_within(cached_server, env.key, HEARD_WITHIN)


async def test_a_signing_secret_set_elsewhere_is_required_at_once(
    cached_server: processes.Process,
    make_environment: MakeEnv,
    sessions: SessionMaker,
    settings: Settings,
) -> None:
    env = await make_environment()
    assert await status(cached_server, env.key) == 200
    await _set_secret(sessions, settings, env)
    await refused_within(cached_server, env.key, HEARD_WITHIN)  # unsigned: 401 from now on


async def _set_secret(sessions: SessionMaker, settings: Settings, env: Env) -> None:
    async with transaction(sessions) as session:
        row = await session.get(Environment, env.id)
        assert row is not None
        await events.change_settings(
            session,
            row,
            SecretBox.of(settings),
            {"webhook_signing_secret": "s3cret-" + new_id("k")},
            allowlist=settings.segment_api_hosts,
        )


async def test_a_rotated_out_key_stops_when_its_grace_ends_not_when_the_cache_forgets(
    cached_server: processes.Process, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment()
    await rotate_elsewhere(sessions, env, grace=2)
    started = time.monotonic()
    assert await status(cached_server, env.key) == 200  # within its grace: remembered
    assert await status(cached_server, env.key) == 200
    took = await refused_within(cached_server, env.key, 5.0)
    assert 1.0 < time.monotonic() - started < 2.0 + HEARD_WITHIN, took


async def test_every_api_process_hears_a_rotation_made_through_another(
    env_vars: dict[str, str], make_environment: MakeEnv
) -> None:
    server = await asyncio.to_thread(
        processes.serve, env_vars, KEY_CACHE_SECONDS=HOUR, WEB_CONCURRENCY="2"
    )
    try:
        await listening(server, 2)
        env = await make_environment()
        for _ in range(20):  # both processes have seen, and remember, the key
            assert await status(server, env.key) == 200
        async with httpx.AsyncClient(
            base_url=server.url, headers={"Authorization": f"Bearer {env_vars['ADMIN_TOKEN']}"}
        ) as admin:
            rotated = await admin.post(
                f"/api/environments/{env.id}/rotate-webhook-key", params={"grace_seconds": 0}
            )
            assert rotated.status_code == 200, rotated.text
        await asyncio.sleep(0.2)  # the notification's way to the other process
        answers = [await status(server, env.key) for _ in range(20)]
        assert answers == [401] * 20
    finally:
        await asyncio.to_thread(server.stop)


async def test_changes_made_while_a_process_could_not_listen_are_in_force_once_it_can(
    env_vars: dict[str, str],
    settings: Settings,
    make_environment: MakeEnv,
    sessions: SessionMaker,
) -> None:
    """The server's connections (its listening one too) go through a proxy that is cut: the
    rotation's notification reaches nobody. Once the database is back, the old key is refused
    without waiting an hour for the entry to expire."""
    assert settings.database_url
    proxy = await TcpProxy.for_database(settings.database_url).start()
    server = await asyncio.to_thread(
        processes.serve,
        env_vars,
        DATABASE_URL=proxy.database_url(settings.database_url),
        KEY_CACHE_SECONDS=HOUR,
    )
    try:
        await listening(server, 1)
        env = await make_environment()
        assert await status(server, env.key) == 200
        await proxy.cut()
        await rotate_elsewhere(sessions, env)
        await proxy.restore()

        async def refused() -> bool:
            return await status(server, env.key) == 401  # 503 while it reconnects

        await wait_for(refused, timeout=15)
        await listening(server, 1)
    finally:
        await asyncio.to_thread(server.kill)
        await proxy.stop()


def test_a_lookup_that_raced_a_change_is_not_remembered() -> None:
    """A lookup read before a change, answered after the change was heard, would put the old
    answer back into a cache just emptied."""
    cache: KeyCache[KeyMatch] = KeyCache("webhook", ttl=60)
    cache.trusted = True
    match = KeyMatch(uuid.uuid4(), "company_id", None)
    since = cache.since()
    cache.forget_all()  # the notification arrives while the lookup is on its way
    cache.remember("digest", match, since)
    assert cache.get("digest") is None
    cache.remember("digest", match, cache.since())
    assert cache.get("digest") == match
    cache.trusted = False  # not listening: nothing is answered from memory
    assert cache.get("digest") is None


async def test_a_source_write_key_revoked_elsewhere_is_refused_at_once(
    cached_server: processes.Process, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment()

    async def publish() -> int:
        async with httpx.AsyncClient(base_url=cached_server.url, timeout=10) as client:
            response = await client.post(
                "/v1/track", json=track(new_id("u"), "Seen"), auth=(env.source_write_key, "")
            )
        return response.status_code

    assert await publish() == 200
    assert await publish() == 200  # from the cache
    async with transaction(sessions) as session:
        row = await session.get(Environment, env.id)
        assert row is not None
        await events.rotate_source_write_key(session, row, grace_seconds=0)
    start = time.monotonic()
    while (answer := await publish()) == 200:
        assert time.monotonic() - start < HEARD_WITHIN, "the revoked write key still publishes"
        await asyncio.sleep(0.02)
    assert answer == 401


async def test_a_change_nobody_announces_is_in_force_within_two_seconds(
    cached_server: processes.Process, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    """An operator's SQL that no trigger announces (on Citus there is none: a reference table's
    write cannot NOTIFY; here on plain Postgres it is switched off for the statement) is still
    found by every process's fingerprint of the table, within POLL_SECONDS."""
    env = await make_environment()
    assert await status(cached_server, env.key) == 200
    async with transaction(sessions) as session:
        quiet = bool(
            await session.scalar(
                text("SELECT count(*) FROM pg_trigger WHERE tgname = 'environments_changed'")
            )
        )
        if quiet:  # plain Postgres: the statement below notifies nobody
            await session.execute(text("ALTER TABLE environments DISABLE TRIGGER USER"))
        await session.execute(
            text("UPDATE environments SET webhook_key_hash = :digest WHERE id = :id"),
            {"digest": uuid.uuid4().hex * 2, "id": env.id},
        )
        if quiet:
            await session.execute(text("ALTER TABLE environments ENABLE TRIGGER USER"))
    await refused_within(cached_server, env.key, HEARD_WITHIN)
