"""SECRET_KEY (issue #15.5): a wrong key stops serve, worker and the commands that decrypt,
with a message naming it; SECRET_KEY_PREVIOUS still decrypts during a rotation, and
`secret-key rotate` re-encrypts every stored secret and the canary with the new key.

Each test has a database of its own: a rotation rewrites every secret it holds."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import orjson
import pytest
from sqlalchemy import make_url, select
from sqlalchemy.ext.asyncio import create_async_engine

from integration.crypto import SecretBox
from integration.environments import service as environments
from integration.keyring import CANARY_KEY
from integration.outbound import events
from integration.store.db import SessionMaker, make_sessionmaker, transaction
from integration.store.models import Environment, SystemState
from tests import processes
from tests.outbound_support import cli
from tests.processes import ROOT

KEY_A = "key-a-" + uuid.uuid4().hex
KEY_B = "key-b-" + uuid.uuid4().hex
WRITE_KEY = "wk_" + uuid.uuid4().hex
SIGNING = "whsec_" + uuid.uuid4().hex


def _plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


class Fresh:
    def __init__(self, env_vars: dict[str, str], url: str, sessions: SessionMaker) -> None:
        self.url = url
        self.sessions = sessions
        self._env = {**env_vars, "DATABASE_URL": url}

    def env(self, key: str, previous: str | None = None) -> dict[str, str]:
        extra = {"SECRET_KEY_PREVIOUS": previous} if previous else {}
        return {**self._env, "SECRET_KEY": key, **extra}

    async def canary(self) -> str | None:
        async with self.sessions() as session:
            row = await session.get(SystemState, CANARY_KEY)
            return row.value if row else None

    async def tokens(self) -> list[str]:
        async with self.sessions() as session:
            envs = await session.scalars(select(Environment))
            return [t for e in envs for t in (e.segment_write_key, e.webhook_signing_secret) if t]


@pytest.fixture
async def fresh(postgres_server: str, env_vars: dict[str, str]) -> AsyncIterator[Fresh]:
    name = f"itest_sk_{uuid.uuid4().hex[:12]}"
    url = make_url(_plain(postgres_server)).set(database=name).render_as_string(False)
    conn = await asyncpg.connect(_plain(postgres_server))
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "integration", "migrate"],
        check=True,
        cwd=ROOT,
        env={**env_vars, "DATABASE_URL": url, "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
    )
    engine = create_async_engine(url.replace("postgresql://", "postgresql+asyncpg://", 1))
    try:
        yield Fresh(env_vars, url, make_sessionmaker(engine))
    finally:
        await engine.dispose()
        conn = await asyncpg.connect(_plain(postgres_server))
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


async def _environment_with_secrets(fresh: Fresh, key: str) -> str:
    """An environment holding both secrets encrypted with `key`, written as an older version
    would have: straight to the table, without a canary."""
    name = f"sk-{uuid.uuid4().hex[:8]}"
    async with transaction(fresh.sessions) as session:
        created = await environments.create(session, name)
        changes = {"segment_write_key": WRITE_KEY, "webhook_signing_secret": SIGNING}
        await events.change_settings(session, created.environment, SecretBox(key), changes)
    return name


def _refused(out: str) -> None:
    assert "SECRET_KEY does not match" in out, out
    assert "Traceback" not in out, out


async def test_a_wrong_secret_key_stops_serve_worker_and_the_commands_that_decrypt(
    fresh: Fresh,
) -> None:
    created = await cli(fresh.env(KEY_A), "env", "create", "prod")
    assert created.code == 0, created
    first = await cli(fresh.env(KEY_A), "env", "set", "prod", "--write-key", WRITE_KEY)
    assert first.code == 0, first
    assert await fresh.canary() is not None

    wrong = fresh.env(KEY_B)
    for args in (
        ("serve",),
        ("worker",),
        ("env", "list"),
        ("env", "test", "prod"),
        ("env", "set", "prod", "--write-key", "wk_" + uuid.uuid4().hex),
    ):
        result = await cli(wrong, *args, seconds=30)
        assert result.code != 0, (args, result)
        _refused(result.out)
    # Nothing was written with the wrong key.
    [token] = await fresh.tokens()
    assert SecretBox(KEY_A).decrypt(token) == WRITE_KEY

    listed = await cli(fresh.env(KEY_A), "env", "list", "--json")
    assert listed.code == 0, listed
    assert orjson.loads(listed.out)[0]["segment_write_key"] == "…" + WRITE_KEY[-4:]


async def test_the_first_start_checks_secrets_stored_before_the_canary(fresh: Fresh) -> None:
    await _environment_with_secrets(fresh, KEY_A)
    assert await fresh.canary() is None

    refused = await cli(fresh.env(KEY_B), "env", "list")
    assert refused.code != 0
    _refused(refused.out)
    assert await fresh.canary() is None  # not made with the wrong key

    assert (await cli(fresh.env(KEY_A), "env", "list")).code == 0
    canary = await fresh.canary()
    assert canary is not None and SecretBox(KEY_A).decrypt(canary)


async def test_rotation_re_encrypts_every_secret_with_the_new_key(
    fresh: Fresh, env_vars: dict[str, str]
) -> None:
    name = await _environment_with_secrets(fresh, KEY_A)
    assert (await cli(fresh.env(KEY_A), "env", "list")).code == 0  # the canary, under A

    # Mid-rotation, both keys open everything: the processes start with the new key.
    during = fresh.env(KEY_B, previous=KEY_A)
    assert (await cli(during, "env", "list")).code == 0, "SECRET_KEY_PREVIOUS must decrypt"
    rotated = await cli(during, "secret-key", "rotate")
    assert rotated.code == 0, rotated
    assert "re-encrypted 2 secret(s) of 1 environment(s)" in rotated.out, rotated

    tokens = [*await fresh.tokens(), await fresh.canary()]
    for token in tokens:
        assert token is not None and SecretBox(KEY_B).decrypt(token)
        with pytest.raises(ValueError):
            SecretBox(KEY_A).decrypt(token)

    # After it, the new key alone works and the old one is refused.
    after = fresh.env(KEY_B)
    listed = await cli(after, "env", "list", "--json")
    assert listed.code == 0, listed
    refused = await cli(fresh.env(KEY_A), "env", "list")
    _refused(refused.out)

    server = await asyncio.to_thread(processes.serve, after)
    try:
        key = await _rotate_webhook_key(server.url, name)
        body = orjson.dumps({"type": "track", "userId": "u", "event": "Signed"})
        signature = hmac.new(SIGNING.encode(), body, hashlib.sha1).hexdigest()
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            answer = await client.post(
                f"/webhooks/segment/{key}", content=body, headers={"X-Signature": signature}
            )
        assert answer.status_code == 200, answer.text
    finally:
        await asyncio.to_thread(server.stop)


async def _rotate_webhook_key(base: str, name: str) -> str:
    from tests.conftest import ADMIN_TOKEN

    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with httpx.AsyncClient(base_url=base, timeout=30, headers=headers) as client:
        envs = (await client.get("/api/environments")).json()["items"]
        [env] = [e for e in envs if e["name"] == name]
        rotated = await client.post(f"/api/environments/{env['id']}/rotate-webhook-key")
        key: str = rotated.json()["webhook_key"]
        return key


async def test_rotation_needs_the_previous_key_and_changes_nothing_it_cannot_open(
    fresh: Fresh,
) -> None:
    name = await _environment_with_secrets(fresh, KEY_A)
    alone = await cli(fresh.env(KEY_B), "secret-key", "rotate")
    assert alone.code != 0 and "SECRET_KEY_PREVIOUS" in alone.out, alone

    before = await fresh.tokens()
    key_c = "key-c-" + uuid.uuid4().hex
    wrong = await cli(fresh.env(KEY_B, previous=key_c), "secret-key", "rotate")
    assert wrong.code != 0, wrong
    assert f"{name}.segment_write_key" in wrong.out and "nothing was changed" in wrong.out
    assert "Traceback" not in wrong.out
    assert await fresh.tokens() == before
