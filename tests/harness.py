"""What the fixtures and the support modules share: the environment a test made, waiting on a
condition instead of a fixed sleep (what a test waits for is named), and a request body that
says whether a service read it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy import make_url

from tests import citus_cluster
from tests.processes import ROOT


def _plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _admin(server: str, sql: str) -> None:
    conn = await asyncpg.connect(_plain(server))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def fresh_database(server: str, prefix: str) -> Iterator[str]:
    """A new database on `server`, migrated by the product's own `migrate` command (Alembic
    upgrade head), dropped afterwards; its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    url = make_url(_plain(server)).set(database=name).render_as_string(hide_password=False)
    asyncio.run(_admin(server, f'CREATE DATABASE "{name}"'))
    # On a Citus coordinator the database is made on every node, with the workers added, before
    # `migrate` (which then distributes the schema, as it does for a user).
    citus = asyncio.run(citus_cluster.prepare_database(_plain(server), name))
    try:
        subprocess.run(
            [sys.executable, "-m", "integration", "migrate"],
            check=True,
            cwd=ROOT,
            env={**os.environ, "DATABASE_URL": url},
            stdout=subprocess.DEVNULL,
        )
        yield url
    finally:
        asyncio.run(_admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        if citus:
            asyncio.run(citus_cluster.drop_database(_plain(server), name))


@dataclass
class TestEnvironment:
    id: uuid.UUID
    name: str
    key: str
    source_write_key: str = ""  # the /v1 intake's

    @property
    def webhook_path(self) -> str:
        return f"/webhooks/segment/{self.key}"


async def wait_for(
    predicate: Callable[[], Any],
    *,
    timeout: float = 20,  # noqa: ASYNC109 - a polling deadline, not a cancellation scope
    interval: float = 0.1,
) -> Any:
    """Poll until `predicate()` (sync or async) is truthy; fail with a clear message if not."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


class Body:
    """A request body that counts whether it was read."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.reads = 0

    async def __call__(self) -> bytes:
        self.reads += 1
        return self.data
