"""What the commands share: settings (with what to do when one is missing), one database
transaction per command, a few output helpers. Heavy modules are imported inside functions
(see the package's docstring)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import click
import orjson

from integration.cli.instance import locate, missing_hint
from integration.config import ConfigError, Settings, get_settings
from integration.errors import AppError

if TYPE_CHECKING:  # only for annotations: SQLAlchemy alone takes 0.7 s to import
    from sqlalchemy.ext.asyncio import AsyncSession

    from integration.store.models import Environment

T = TypeVar("T")
Work = Callable[["AsyncSession", Settings], Awaitable[T]]


def settings(*required: str, discover: bool = True) -> Settings:
    """The settings, with the ones this command cannot do without checked; a message saying
    which are missing and how to fix it otherwise. `discover`: find a running `make run` (its
    data folder from --data-dir, DATA_DIR, ./.data or the registry); servers do not guess."""
    try:
        if not discover:
            found = get_settings()
            found.require(*required)
            return found
        located = locate(_data_dir_option())
        try:
            located.settings.require(*required)
        except ConfigError as exc:
            raise ConfigError(f"{exc}. {missing_hint(located)}") from None
        return located.settings
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _data_dir_option() -> str | None:
    context = click.get_current_context(silent=True)
    root = context.find_root() if context else None
    value = root.params.get("data_dir") if root else None
    return str(value) if value else None


def db_call(work: Work[T], *, decrypts: bool = False, wakes: bool = False) -> T:
    """Run `work` in one committed transaction against DATABASE_URL. `decrypts`: the command
    reads or writes secrets, so SECRET_KEY is first checked against the database's canary.
    `wakes`: jobs it queued (a delivery wake-up) go to the worker's queue after the commit."""
    config = settings("database_url", *(("secret_key",) if decrypts else ()))
    return run(_in_transaction(config, work, decrypts=decrypts, wakes=wakes))


async def _in_transaction(config: Settings, work: Work[T], *, decrypts: bool, wakes: bool) -> T:
    from integration.store.db import make_engine, make_sessionmaker, transaction

    engine = make_engine(config, pool_size=1)
    queue = None
    try:
        if wakes and config.redis_url:
            from integration.queue import Queue

            queue = Queue(config)
        sessions = make_sessionmaker(engine, enqueue=queue.send if queue else None)
        if decrypts:
            from integration.crypto import SecretBox
            from integration.keyring import verify

            await verify(sessions, SecretBox.of(config))
        async with transaction(sessions) as session:
            return await work(session, config)
    finally:
        if queue is not None:
            await queue.close()
        await engine.dispose()


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine; our errors become one line on stderr and exit 1, never a traceback."""
    try:
        return asyncio.run(main)
    except AppError as exc:
        if exc.error == "database_unavailable":
            raise click.ClickException(
                "cannot reach the database at DATABASE_URL: is it running? (`make run` starts"
                " one; --data-dir names the data folder of the run to talk to)"
            ) from None
        raise click.ClickException(exc.detail) from None
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def echo_json(value: Any) -> None:
    click.echo(orjson.dumps(value).decode())


def shown(value: Any) -> str:
    """A value as a person reads it: "not set" for nothing."""
    return "not set" if value is None or value == "" else str(value)


JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


async def environment(session: AsyncSession, name: str) -> Environment:
    """An environment by its name, or by its id (what the admin API shows)."""
    import uuid

    from integration.environments import service as environments

    try:
        env_id = uuid.UUID(name)
    except ValueError:
        return await environments.by_name(session, name)
    return await environments.get(session, env_id)


def delivery_status(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--status: one of the outbox's statuses (checked here, so that --help stays fast)."""
    from integration.store.models import DELIVERY_STATUSES

    if value is not None and value not in DELIVERY_STATUSES:
        raise click.BadParameter(f"must be one of {', '.join(DELIVERY_STATUSES)}")
    return value


def limit_option(default: int = 50) -> Callable[[Any], Any]:
    """--limit N, up to the admin API's largest page (admin.pagination.MAX_LIMIT; a test
    holds the two together: importing it here would slow every command down)."""
    return click.option(
        "--limit",
        type=click.IntRange(1, 500),
        default=default,
        show_default=True,
        help="How many to show, newest first.",
    )
