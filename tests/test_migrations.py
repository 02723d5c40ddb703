"""The models and the migrations describe the same schema: what `alembic revision
--autogenerate` would find between the migrated test database and the models is nothing. A
column added to a model without a migration (or the reverse) fails here, not in production.
It also goes down to the previous revision and back up, so a downgrade cannot rot unseen."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from integration.config import Settings, asyncpg_url
from integration.store.models import Base
from tests.harness import fresh_database
from tests.processes import ROOT


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def test_the_migrated_schema_is_what_the_models_say(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        differences = await connection.run_sync(_differences)
    assert differences == []


def _config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["database_url"] = url
    return config


def test_the_latest_migration_goes_down_and_up_again(settings: Settings) -> None:
    assert settings.database_url
    with fresh_database(settings.database_url, "itest_migrate") as plain:
        url = asyncpg_url(plain)
        config = _config(url)
        # Alembic runs each command in its own event loop (migrations/env.py): off ours.
        command.downgrade(config, "-1")
        command.upgrade(config, "head")
        assert asyncio.run(_head(url)) == _script_head(config)


async def _head(url: str) -> str | None:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(
                lambda c: MigrationContext.configure(c).get_current_revision()
            )
    finally:
        await engine.dispose()


def _script_head(config: Config) -> str | None:
    return ScriptDirectory.from_config(config).get_current_head()
