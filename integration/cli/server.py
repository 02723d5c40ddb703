"""The processes: serve, worker, migrate, run; and SECRET_KEY's rotation."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import click

from integration.cli.common import located, settings
from integration.cli.common import run as run_async
from integration.config import ConfigError, Settings

MIGRATIONS = Path(__file__).resolve().parent.parent.parent / "migrations"


def _check_secret_key(config: Settings) -> None:
    """Refuse to start with a SECRET_KEY that does not open the database's secrets. A database
    that cannot be reached yet cannot be asked: the process starts (answering 503 until it
    can be, as it always has) and says that the key went unchecked."""
    from integration.crypto import SecretBox
    from integration.keyring import verify
    from integration.store.db import is_unavailable, make_engine, make_sessionmaker

    async def check() -> None:
        engine = make_engine(config, pool_size=1)
        try:
            await verify(make_sessionmaker(engine), SecretBox.of(config))
        finally:
            await engine.dispose()

    try:
        asyncio.run(check())
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:
        if not is_unavailable(exc):
            raise click.ClickException(
                f"could not check SECRET_KEY against the database: {type(exc).__name__}"
            ) from None
        click.echo(
            f"warning: SECRET_KEY not checked: the database is unreachable ({type(exc).__name__})",
            err=True,
        )


@click.command()
@click.option("--host", default=None, help="Interface to listen on (HOST, default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port to listen on (PORT, default 8000).")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=None,
    help="API processes sharing the port (WEB_CONCURRENCY, default 1).",
)
def serve(host: str | None, port: int | None, workers: int | None) -> None:
    """Run the API server: webhook intake, product events, admin API."""
    import uvicorn

    from integration.logs import configure_logging
    from integration.metrics import shared_between_processes

    config = settings("database_url", "secret_key", "admin_token", discover=False)
    _check_secret_key(config)
    configure_logging(config.log_level)
    processes = workers or config.web_concurrency
    with shared_between_processes() if processes > 1 else contextlib.nullcontext():
        uvicorn.run(
            "integration.app:create_app",
            factory=True,
            host=host or config.host,
            port=port or config.port,
            workers=processes,
            log_config=None,
            access_log=False,
            server_header=False,
        )


@click.command()
@click.option(
    "--check",
    is_flag=True,
    help="Exit 0 if this machine's worker runs (recorded its health in Redis within 11 s), 1"
    " if not: a container's healthcheck.",
)
def worker(check: bool) -> None:
    """Run the delivery worker: sends the outbox to Segment, retries, dead-letters."""
    from integration.logs import configure_logging
    from integration.worker import check_health, run_worker

    if check:
        if not check_health(settings("redis_url", discover=False)):
            raise click.ClickException("no worker of this machine recorded its health lately")
        click.echo("the worker runs")
        return
    config = settings("database_url", "redis_url", "secret_key", discover=False)
    _check_secret_key(config)
    configure_logging(config.log_level)
    run_worker(config)


@click.command()
def migrate() -> None:
    """Bring the database schema up to date (Alembic upgrade head)."""
    config = settings("database_url")
    upgrade(config.database_url or "")
    click.echo("database is up to date")


def upgrade(database_url: str) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["database_url"] = database_url
    command.upgrade(config, "head")


@click.command()
def run() -> None:
    """Start everything for local use: embedded Postgres/Redis if unset, API and worker."""
    from integration.runner import run_all

    run_all()


@click.group("secret-key")
def secret_key() -> None:
    """SECRET_KEY: rotate the key that encrypts write keys and signing secrets."""


@secret_key.command("rotate")
def secret_key_rotate() -> None:
    """Re-encrypt every stored secret with SECRET_KEY (opening them with SECRET_KEY_PREVIOUS).

    Under `make run` (no SECRET_KEY_PREVIOUS given): make a new key, have the run re-encrypt
    everything with it and restart its API and worker, and keep it in its secrets.json."""
    from integration.crypto import SecretBox
    from integration.keyring import Rotated, rotate
    from integration.store.db import make_engine, make_sessionmaker

    found = located()
    if found.data_dir is not None and not found.settings.secret_key_previous:
        _rotate_make_run(found.data_dir, found.settings.secret_key or "")
        return
    config = settings("database_url", "secret_key", "secret_key_previous")

    async def main() -> Rotated:
        engine = make_engine(config, pool_size=1)
        try:
            return await rotate(make_sessionmaker(engine), SecretBox.of(config))
        finally:
            await engine.dispose()

    done = run_async(main())
    click.echo(
        f"re-encrypted {done.secrets} secret(s) of {done.environments} environment(s) and the"
        " canary with SECRET_KEY; SECRET_KEY_PREVIOUS can now be removed"
    )


ROTATION_SECONDS = 120


def _rotate_make_run(data: Path, current: str) -> None:
    """Prepare the rotation in the run's secrets.json and signal the run to finish it."""
    import os
    import time

    from integration.rundir import run_pid
    from integration.runner import ROTATE_SIGNAL, prepare_rotation, rotation_pending

    try:
        new = prepare_rotation(data, current)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    pid = run_pid(data)
    if pid is None:
        click.echo(f"a new SECRET_KEY is in {data}/secrets.json: start `make run` to finish")
        return
    os.kill(pid, ROTATE_SIGNAL)
    deadline = time.monotonic() + ROTATION_SECONDS
    while rotation_pending(data) or _runtime_secret_key(data) != new:
        if time.monotonic() > deadline or run_pid(data) != pid:
            raise click.ClickException(
                f"the run (pid {pid}) did not finish the rotation: see its terminal. The new"
                f" key waits in {data}/secrets.json; the next `make run` finishes it"
            )
        time.sleep(0.2)
    click.echo(
        f"SECRET_KEY of the `make run` of {data} rotated: every stored secret re-encrypted with"
        f" a new key, kept in {data}/secrets.json; its API and worker restarted with it"
    )


def _runtime_secret_key(data: Path) -> str | None:
    from integration.config import runtime_env_path

    try:
        lines = runtime_env_path(data).read_text().splitlines()
    except OSError:
        return None
    return next((v for k, _, v in (x.partition("=") for x in lines) if k == "SECRET_KEY"), None)
