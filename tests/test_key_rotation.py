"""Rotated keys keep their promises (issue 19, item 3). A rotation says how long the key it
replaces keeps working; that promise holds however many rotations follow, for the webhook key
and for the intake write key (the /v1 intake's source_write_key). A rotation that would end an
earlier key sooner than it was promised is refused until the caller says so. Every live key is
listed (its last characters, never whole) with its end time: by the admin API and `env show`."""

from __future__ import annotations

import asyncio
import os
import pty
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from alembic import command

from integration.config import Settings, asyncpg_url
from integration.outbound import events
from integration.store.db import SessionMaker, transaction
from integration.store.models import Environment
from tests import processes
from tests.admin_support import create_environment, error, ok
from tests.harness import TestEnvironment as Env
from tests.harness import fresh_database
from tests.outbound_support import cli
from tests.processes import ROOT
from tests.segment_payloads import MakeEnv, identify, new_id
from tests.test_key_cache import HOUR, listening
from tests.test_migrations import _config

Status = Callable[[str], Awaitable[int]]


def when(value: str) -> datetime:
    return datetime.fromisoformat(value)


def webhook_status(client: httpx.AsyncClient) -> Status:
    async def status(key: str) -> int:
        answer = await client.post(f"/webhooks/segment/{key}", json=identify(new_id("u"), {}))
        return answer.status_code

    return status


def intake_status(client: httpx.AsyncClient) -> Status:
    async def status(key: str) -> int:
        message = {"userId": new_id("u"), "event": "Rotated"}
        answer = await client.post("/v1/track", json=message, auth=(key, ""))
        return answer.status_code

    return status


async def statuses(status: Status, keys: list[str]) -> list[int]:
    return [await status(key) for key in keys]


# --- the webhook key, through the admin API ---------------------------------------------------


async def test_every_rotated_out_webhook_key_works_until_its_own_time(
    admin: httpx.AsyncClient, http: httpx.AsyncClient
) -> None:
    created = await create_environment(admin)
    path = f"/api/environments/{created['id']}"
    keys = [created["webhook_key"]]
    status = webhook_status(http)

    # "The old key works for an hour", then a rotation with the default grace (a day).
    first = ok(await admin.post(f"{path}/rotate-webhook-key", json={"grace_seconds": 3600}))
    keys.append(first["webhook_key"])
    second = ok(await admin.post(f"{path}/rotate-webhook-key"))
    keys.append(second["webhook_key"])
    third = ok(await admin.post(f"{path}/rotate-webhook-key"))
    keys.append(third["webhook_key"])
    assert await statuses(status, keys) == [200, 200, 200, 200]

    # Each promise is listed, by the key's last characters and its own end time.
    read = await admin.get(path)
    listed = ok(read)["previous_webhook_keys"]
    assert [k["hint"] for k in listed] == ["…" + k[-4:] for k in (keys[2], keys[1], keys[0])]
    ends = [when(k["valid_until"]) for k in listed]
    assert ends[0] == when(third["previous_key_valid_until"])
    assert ends[1] == when(second["previous_key_valid_until"])
    assert ends[2] == when(first["previous_key_valid_until"])
    assert ends[2] - datetime.now(UTC) < timedelta(hours=1)
    assert ends[1] - datetime.now(UTC) > timedelta(hours=23)
    assert not any(key in read.text for key in keys)
    listing = await admin.get("/api/environments")
    mine = next(e for e in ok(listing)["items"] if e["id"] == created["id"])
    assert mine["previous_webhook_keys"] == listed
    assert not any(key in listing.text for key in keys)


async def test_a_rotation_that_would_end_earlier_keys_sooner_asks_first(
    admin: httpx.AsyncClient, http: httpx.AsyncClient
) -> None:
    created = await create_environment(admin)
    path = f"/api/environments/{created['id']}"
    status = webhook_status(http)
    first = created["webhook_key"]
    second = ok(await admin.post(f"{path}/rotate-webhook-key"))["webhook_key"]  # a day

    # A leak: grace 0 would also end `first`, promised a day. Refused, nothing changed.
    refused = await admin.post(f"{path}/rotate-webhook-key", json={"grace_seconds": 0})
    body = error(refused, 409)
    assert body["error"] == "previous_keys_would_end_early"
    assert "…" + first[-4:] in body["detail"] and "end_previous_keys_early" in body["detail"]
    assert [k["hint"] for k in body["keys"]] == ["…" + first[-4:]]
    assert first not in refused.text
    shorter = await admin.post(f"{path}/rotate-webhook-key", params={"grace_seconds": 60})
    assert error(shorter, 409)["error"] == "previous_keys_would_end_early"
    assert await statuses(status, [first, second]) == [200, 200]
    assert len(ok(await admin.get(path))["previous_webhook_keys"]) == 1

    # Said explicitly: a shorter grace ends the earlier key with the replaced one...
    early = {"grace_seconds": 60, "end_previous_keys_early": True}
    third = ok(await admin.post(f"{path}/rotate-webhook-key", json=early))
    listed = ok(await admin.get(path))["previous_webhook_keys"]
    assert {k["hint"] for k in listed} == {"…" + first[-4:], "…" + second[-4:]}
    assert {k["valid_until"] for k in listed} == {third["previous_key_valid_until"]}
    assert await statuses(status, [first, second, third["webhook_key"]]) == [200, 200, 200]
    # ... and grace 0 with the flag (in the query, too) revokes every old key at once.
    leak = {"grace_seconds": "0", "end_previous_keys_early": "true"}
    fourth = ok(await admin.post(f"{path}/rotate-webhook-key", params=leak))
    assert fourth["previous_key_valid_until"] is None
    assert ok(await admin.get(path))["previous_webhook_keys"] == []
    old = [first, second, third["webhook_key"]]
    assert await statuses(status, [*old, fourth["webhook_key"]]) == [401, 401, 401, 200]


async def test_a_longer_grace_than_every_promise_needs_no_flag(
    admin: httpx.AsyncClient, http: httpx.AsyncClient
) -> None:
    created = await create_environment(admin)
    path = f"/api/environments/{created['id']}"
    week = {"grace_seconds": 7 * 86400}
    ok(await admin.post(f"{path}/rotate-webhook-key", json=week))
    # A day is shorter than the week promised: refused, and the answer says what would do.
    body = error(await admin.post(f"{path}/rotate-webhook-key"), 409)
    needed = int(body["detail"].split("at least ")[1].split()[0])  # a week less what passed
    assert 7 * 86400 - 60 < needed <= 7 * 86400
    longer = ok(await admin.post(f"{path}/rotate-webhook-key", json={"grace_seconds": 8 * 86400}))
    assert len(ok(await admin.get(path))["previous_webhook_keys"]) == 2
    assert await webhook_status(http)(created["webhook_key"]) == 200
    assert longer["previous_key_valid_until"]


# --- the intake write key, through the admin API ----------------------------------------------


async def test_every_rotated_out_intake_write_key_opens_the_intake_until_its_time(
    admin: httpx.AsyncClient, http: httpx.AsyncClient, make_environment: MakeEnv
) -> None:
    env = await make_environment()
    path = f"/api/environments/{env.id}"
    status = intake_status(http)
    rotate = f"{path}/rotate-source-write-key"
    keys = [env.source_write_key]
    first = ok(await admin.post(rotate, json={"grace_seconds": 3600}))
    keys.append(first["source_write_key"])
    second = ok(await admin.post(rotate))  # the default grace: a day
    keys.append(second["source_write_key"])
    assert await statuses(status, keys) == [200, 200, 200]
    listed = ok(await admin.get(path))["previous_source_write_keys"]
    assert [k["hint"] for k in listed] == ["…" + keys[1][-4:], "…" + keys[0][-4:]]
    assert when(listed[1]["valid_until"]) == when(first["previous_source_write_key_valid_until"])

    refused = error(await admin.post(rotate, json={"grace_seconds": 0}), 409)
    assert refused["error"] == "previous_keys_would_end_early"
    assert "intake write key" in refused["detail"]
    assert await statuses(status, keys) == [200, 200, 200]
    revoke = {"grace_seconds": 0, "end_previous_keys_early": True}
    newest = ok(await admin.post(rotate, json=revoke))["source_write_key"]
    assert await statuses(status, [*keys, newest]) == [401, 401, 401, 200]


# --- each key ends at its own time, in a process that caches keys for an hour ----------------


@pytest.fixture
async def caching_server(env_vars: dict[str, str]) -> AsyncIterator[processes.Process]:
    server = await asyncio.to_thread(processes.serve, env_vars, KEY_CACHE_SECONDS=HOUR)
    await listening(server, 1)
    yield server
    await asyncio.to_thread(server.stop)


async def rotate_both(sessions: SessionMaker, env: Env, grace: int) -> tuple[str, str]:
    async with transaction(sessions) as session:
        row = await session.get(Environment, env.id)
        assert row is not None
        webhook = await events.rotate_webhook_key(session, row, grace_seconds=grace)
        intake = await events.rotate_source_write_key(session, row, grace_seconds=grace)
    return webhook.key, intake.key


async def first_refused(status: Status, key: str, within: float) -> float:
    """Seconds from now until the key is first refused (401)."""
    start = time.monotonic()
    while (answer := await status(key)) != 401:
        assert answer == 200, answer
        assert time.monotonic() - start < within, f"…{key[-4:]} still works after {within}s"
        await asyncio.sleep(0.05)
    return time.monotonic() - start


@pytest.mark.slow
async def test_each_rotated_out_key_ends_at_its_own_time_even_when_cached(
    caching_server: processes.Process, sessions: SessionMaker, make_environment: MakeEnv
) -> None:
    env = await make_environment()
    async with httpx.AsyncClient(base_url=caching_server.url, timeout=10) as client:
        for status, key0 in (
            (webhook_status(client), env.key),
            (intake_status(client), env.source_write_key),
        ):
            assert await status(key0) == 200  # remembered by the process from now on
        start = time.monotonic()
        second = await rotate_both(sessions, env, grace=2)  # the first keys end in 2 s
        current = await rotate_both(sessions, env, grace=5)  # the second keys in 5 s
        doors = (webhook_status(client), intake_status(client))
        first = (env.key, env.source_write_key)
        # The second rotation did not end the first keys; both are remembered now.
        for door, key0, key1 in zip(doors, first, second, strict=True):
            assert await statuses(door, [key0, key1]) == [200, 200]
        for door, key0 in zip(doors, first, strict=True):
            await first_refused(door, key0, within=2.5 - (time.monotonic() - start))
        assert time.monotonic() - start >= 1.9
        for door, key1 in zip(doors, second, strict=True):
            assert await door(key1) == 200  # promised 5 s: still working
        for door, key1 in zip(doors, second, strict=True):
            await first_refused(door, key1, within=5.5 - (time.monotonic() - start))
        assert time.monotonic() - start >= 4.9
        assert await statuses(doors[0], [current[0]]) == [200]
        assert await statuses(doors[1], [current[1]]) == [200]


# --- the CLI: env show, and a rotation that asks ---------------------------------------------


async def test_env_show_lists_live_keys_and_a_cli_rotation_refuses_to_end_one_early(
    env_vars: dict[str, str], make_environment: MakeEnv, http: httpx.AsyncClient
) -> None:
    env = await make_environment()
    graced = await cli(env_vars, "env", "rotate-key", env.name, "--grace-seconds", "3600")
    assert graced.code == 0 and "The old key works until" in graced.out, graced
    first = graced.out.strip().splitlines()[-1].rsplit("/", 1)[1]
    again = await cli(env_vars, "env", "rotate-key", env.name)
    assert again.code == 0, again
    source = await cli(env_vars, "env", "rotate-source-write-key", env.name, "--json")
    assert source.code == 0, source

    shown = await cli(env_vars, "env", "show", env.name)
    assert shown.code == 0, shown
    assert f"…{env.key[-4:]}  works until" in shown.out, shown.out
    assert f"…{env.source_write_key[-4:]}  works until" in shown.out, shown.out
    assert env.key not in shown.out and env.source_write_key not in shown.out
    as_json: dict[str, Any] = orjson.loads(
        (await cli(env_vars, "env", "show", env.name, "--json")).out.strip().splitlines()[-1]
    )
    hints = [k["hint"] for k in as_json["previous_webhook_keys"]]
    assert hints == ["…" + first[-4:], "…" + env.key[-4:]]
    assert [k["hint"] for k in as_json["previous_source_write_keys"]] == [
        "…" + env.source_write_key[-4:]
    ]

    # Not a terminal: the rotation cannot ask, so it refuses, names the key, and changes nothing.
    refused = await cli(env_vars, "env", "rotate-key", env.name, "--grace-seconds", "0")
    assert refused.code == 1, refused
    assert f"…{env.key[-4:]}" in refused.out and "--end-previous-keys-early" in refused.out
    assert await webhook_status(http)(env.key) == 200
    forced = await cli(
        env_vars,
        *("env", "rotate-key", env.name, "--grace-seconds", "0"),
        "--end-previous-keys-early",
    )
    assert forced.code == 0 and "revoked" in forced.out, forced
    assert await webhook_status(http)(env.key) == 401


def in_a_terminal(env_vars: dict[str, str], args: list[str], answer: str) -> tuple[int, str]:
    """`python -m integration ARGS` with a terminal on stdin (so it may ask), answering once."""
    controller, terminal = pty.openpty()
    os.write(controller, answer.encode())  # typed ahead: waits in the terminal for the prompt
    try:
        done = subprocess.run(
            [sys.executable, "-m", "integration", *args],
            cwd=ROOT,
            env={**os.environ, **env_vars},
            stdin=terminal,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=60,
            check=False,
        )
    finally:
        os.close(controller)
        os.close(terminal)
    return done.returncode, done.stdout.decode()


async def test_in_a_terminal_the_cli_asks_before_ending_a_key_early(
    env_vars: dict[str, str], make_environment: MakeEnv, http: httpx.AsyncClient
) -> None:
    env = await make_environment()
    graced = await cli(env_vars, "env", "rotate-source-write-key", env.name, "--json")
    assert graced.code == 0, graced
    status = intake_status(http)
    revoke = ["env", "rotate-source-write-key", env.name, "--grace-seconds", "0"]

    code, out = await asyncio.to_thread(in_a_terminal, env_vars, revoke, "n\n")
    assert code == 1 and "End them early and rotate? [y/N]" in out, out
    assert f"…{env.source_write_key[-4:]}  promised until" in out, out
    assert await status(env.source_write_key) == 200  # answered no: nothing changed

    code, out = await asyncio.to_thread(in_a_terminal, env_vars, revoke, "y\n")
    assert code == 0 and "no longer works" in out, out
    assert await status(env.source_write_key) == 401


# --- the migration keeps the promises made before it ------------------------------------------

REVISION = "0009_previous_keys"
BEFORE_0008 = """
INSERT INTO environments (id, name, webhook_key_hash, webhook_key_hint,
    previous_webhook_key_hash, previous_webhook_key_expires_at,
    source_write_key_hash, source_write_key_hint,
    previous_source_write_key_hash, previous_source_write_key_expires_at)
VALUES (gen_random_uuid(), 'live', 'w1', 'w1', 'w0', now() + interval '1 hour',
        's1', 's1', 's0', now() - interval '1 second'),
       (gen_random_uuid(), 'none', 'w2', 'w2', NULL, NULL, 's2', 's2', NULL, NULL)
"""


async def _sql(url: str, statement: str) -> list[tuple[Any, ...]]:
    pg = await asyncpg.connect(url)
    try:
        return [tuple(r) for r in await pg.fetch(statement)]
    finally:
        await pg.close()


def test_the_migration_moves_each_live_previous_key_and_back(settings: Settings) -> None:
    """A key rotated out before the upgrade keeps working until its time after it (and the
    downgrade puts the key promised longest back); one already past its time is not moved."""
    assert settings.database_url
    with fresh_database(settings.database_url, "itest_keys") as plain:
        config = _config(asyncpg_url(plain))
        command.downgrade(config, f"{REVISION}-1")
        asyncio.run(_sql(plain, BEFORE_0008))
        command.upgrade(config, REVISION)
        moved = asyncio.run(
            _sql(plain, "SELECT key_hash, kind, expires_at > now() FROM previous_keys")
        )
        assert moved == [("w0", "webhook", True)]
        command.downgrade(config, f"{REVISION}-1")
        back = asyncio.run(
            _sql(
                plain,
                "SELECT name, previous_webhook_key_hash, previous_source_write_key_hash"
                " FROM environments ORDER BY name",
            )
        )
        assert back == [("live", "w0", None), ("none", None, None)]
        command.upgrade(config, "head")


async def test_two_rotations_at_once_keep_both_replaced_keys(
    admin: httpx.AsyncClient, http: httpx.AsyncClient
) -> None:
    created = await create_environment(admin)
    path = f"/api/environments/{created['id']}/rotate-webhook-key"
    answers = await asyncio.gather(*(admin.post(path) for _ in range(4)))
    new = [ok(answer)["webhook_key"] for answer in answers]
    listed = ok(await admin.get(f"/api/environments/{created['id']}"))["previous_webhook_keys"]
    assert len(listed) == 4  # the first key and three of the four new ones, each kept
    status = webhook_status(http)
    assert await statuses(status, [created["webhook_key"], *new]) == [200] * 5
