"""Alembic environment: runs migrations over the async engine made from DATABASE_URL."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from integration.config import get_settings
from integration.store import citus
from integration.store.models import Base

target_metadata = Base.metadata


def _url() -> str:
    url = context.config.attributes.get("database_url") or get_settings().database_url
    if not url:
        raise SystemExit("DATABASE_URL is not set")
    return str(url)


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        # On Citus every migration runs with the settings distributing needs: a migration from
        # before 0012_citus, run again over a distributed schema (a downgrade, then an upgrade),
        # then drops and creates triggers on distributed tables, and the tables it creates stay
        # local (not Citus-local, which cannot hold an identity column) until 0011 distributes them.
        if citus.is_citus(connection):
            citus.prepare(connection)
        context.run_migrations()


async def _run_async() -> None:
    engine = create_async_engine(_url(), hide_parameters=True)  # no row data in error logs
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
