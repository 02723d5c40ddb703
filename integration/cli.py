"""Command line: serve, worker, migrate, run, and env create/list/set/test/rotate-source-write-key.

Each command imports what it runs inside its own function: importing the whole application
takes about 2 s, and `--help` or `env list` should not pay for the server they do not start."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from integration.config import ConfigError, Settings, get_settings
from integration.errors import AppError

T = TypeVar("T")
MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def _settings(*required: str) -> Settings:
    """The settings, with the ones this command cannot do without checked; a clear error if not."""
    try:
        settings = get_settings()
        settings.require(*required)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    return settings


def _db_call(fn: Callable[[AsyncSession, Settings], Awaitable[T]], *, decrypts: bool = False) -> T:
    """Run `fn` in one committed transaction against DATABASE_URL; first, for a command that
    reads or writes secrets, check SECRET_KEY against the database's canary."""
    from integration.store.db import make_engine, make_sessionmaker, transaction

    settings = _settings(*(("secret_key",) if decrypts else ()))

    async def main() -> T:
        engine = make_engine(settings, pool_size=1)
        try:
            sessions = make_sessionmaker(engine)
            if decrypts:
                from integration.crypto import SecretBox
                from integration.keyring import verify

                await verify(sessions, SecretBox.of(settings))
            async with transaction(sessions) as session:
                return await fn(session, settings)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except AppError as exc:
        raise click.ClickException(exc.detail) from None
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _check_secret_key(settings: Settings) -> None:
    """Refuse to start with a SECRET_KEY that does not open the database's secrets. A database
    that cannot be reached yet cannot be asked: the process starts (answering 503 until it
    can be, as it always has) and says that the key went unchecked."""
    from integration.crypto import SecretBox
    from integration.keyring import verify
    from integration.store.db import is_unavailable, make_engine, make_sessionmaker

    async def check() -> None:
        engine = make_engine(settings, pool_size=1)
        try:
            await verify(make_sessionmaker(engine), SecretBox.of(settings))
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


@click.group()
def main() -> None:
    """A bidirectional Segment integration: Webhooks destination in, HTTP API source out."""


@main.command()
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

    settings = _settings("database_url", "secret_key", "admin_token")
    _check_secret_key(settings)
    configure_logging(settings.log_level)
    processes = workers or settings.web_concurrency
    with shared_between_processes() if processes > 1 else contextlib.nullcontext():
        uvicorn.run(
            "integration.app:create_app",
            factory=True,
            host=host or settings.host,
            port=port or settings.port,
            workers=processes,
            log_config=None,
            access_log=False,
            server_header=False,
        )


@main.command()
def worker() -> None:
    """Run the delivery worker: sends the outbox to Segment, retries, dead-letters."""
    from integration.logs import configure_logging
    from integration.outbound.tasks import run_worker

    settings = _settings("database_url", "redis_url", "secret_key")
    _check_secret_key(settings)
    configure_logging(settings.log_level)
    run_worker(settings)


@main.command()
def migrate() -> None:
    """Bring the database schema up to date (Alembic upgrade head)."""
    settings = _settings("database_url")
    upgrade(settings.database_url or "")
    click.echo("database is up to date")


def upgrade(database_url: str) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["database_url"] = database_url
    command.upgrade(config, "head")


@main.command()
def run() -> None:
    """Start everything for local use: embedded Postgres/Redis if unset, API and worker."""
    from integration.runner import run_all

    run_all()


@main.group()
def env() -> None:
    """Create, list and configure environments."""


@env.command("create")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def env_create(name: str, as_json: bool) -> None:
    """Create an environment and print its webhook URL and its source write key (the keys are
    shown only now)."""
    from integration.environments import service as environments

    async def create(session: AsyncSession, settings: Settings) -> dict[str, Any]:
        created = await environments.create(session, name)
        return {
            "id": str(created.environment.id),
            "name": name,
            "webhook_url": settings.webhook_url(created.webhook_key),
            "webhook_key": created.webhook_key,
            "source_write_key": created.source_write_key,
            "tracking_api_host": settings.public_base_url,
        }

    out = _db_call(create)
    if as_json:
        click.echo(orjson.dumps(out).decode())
        return
    click.echo(f"Created environment {name} ({out['id']}).")
    click.echo("Webhook URL (shown once; paste it into Segment's Webhooks destination):")
    click.echo(out["webhook_url"])
    click.echo(
        "Source write key (shown once; for Segment libraries and tools publishing through us,"
        f" with host {out['tracking_api_host']}):"
    )
    click.echo(out["source_write_key"])


@env.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
def env_list(as_json: bool) -> None:
    """List environments with their settings (secrets masked)."""
    from integration.crypto import SecretBox
    from integration.environments import service as environments

    async def describe_all(session: AsyncSession, settings: Settings) -> list[dict[str, Any]]:
        settings.require("secret_key")
        box = SecretBox.of(settings)
        return [
            environments.describe(e, box).model_dump(mode="json")
            for e in await environments.list_all(session)
        ]

    rows = _db_call(describe_all, decrypts=True)
    if as_json:
        click.echo(orjson.dumps(rows).decode())
        return
    for row in rows:
        stream = "on" if row["stream_enabled"] else "off"
        copies = "on" if row["store_outbound_events"] else "off"
        click.echo(
            f"{row['name']:<16} {row['id']}  stream={stream}  write_key={row['segment_write_key']}"
            f"  source_write_key={row['source_write_key_hint']}"
            f"  company_property={row['company_property']}  api={row['segment_api_url']}"
            f"  store_outbound_events={copies}"
            f"  cors_origins={','.join(row['cors_allowed_origins']) or '-'}"
        )


@env.command("set")
@click.argument("name")
@click.option(
    "--write-key",
    help="Segment HTTP API source write key ('' clears it; '-' reads it from stdin, or asks).",
)
@click.option("--stream", type=click.Choice(["on", "off"]), help="Stream events to Segment.")
@click.option("--company-property", help="Event property naming the company (e.g. company_id).")
@click.option(
    "--signing-secret",
    help="Webhook signing secret ('' clears it; '-' reads it from stdin, or asks).",
)
@click.option("--segment-api-url", help="Segment API base URL, or 'us' / 'eu'.")
@click.option(
    "--store-outbound-events",
    type=click.Choice(["on", "off"]),
    help="Also keep a copy of every outbound message in events (default off).",
)
@click.option(
    "--cors-origins",
    help="Browser origins allowed to call the /v1 intake, comma-separated"
    " (e.g. https://app.example.com); '' allows none.",
)
def env_set(
    name: str,
    write_key: str | None,
    stream: str | None,
    company_property: str | None,
    signing_secret: str | None,
    segment_api_url: str | None,
    store_outbound_events: str | None,
    cors_origins: str | None,
) -> None:
    """Change an environment's settings.

    A secret given as '-' is read from stdin (a pipe) or asked for without echo (a terminal),
    so it never sits in the shell's history or in the process list."""
    if write_key == "-" and signing_secret == "-":
        raise click.UsageError("only one of --write-key and --signing-secret can be '-'")
    if write_key == "-":
        write_key = _read_secret("write key")
    if signing_secret == "-":
        signing_secret = _read_secret("signing secret")
    changes: dict[str, Any] = {
        "segment_write_key": write_key,
        "stream_enabled": None if stream is None else stream == "on",
        "company_property": company_property,
        "webhook_signing_secret": signing_secret,
        "segment_api_url": segment_api_url,
        "store_outbound_events": (
            None if store_outbound_events is None else store_outbound_events == "on"
        ),
        "cors_allowed_origins": None if cors_origins is None else _listed(cors_origins),
    }
    changes = {k: v for k, v in changes.items() if v is not None}
    if not changes:
        raise click.UsageError("nothing to set; see --help")
    from integration.outbound.events import change_settings_by_name

    changed = _db_call(lambda s, cfg: change_settings_by_name(s, cfg, name, changes), decrypts=True)
    click.echo(f"{name}: updated {', '.join(changed) or 'nothing (already so)'}")


def _listed(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _read_secret(what: str) -> str:
    """One line from stdin, or a prompt without echo when stdin is a terminal. Empty is an
    error here: clearing a secret is said explicitly, with ''."""
    if sys.stdin.isatty():
        value: str = click.prompt(f"{what.capitalize()}", hide_input=True, err=True)
    else:
        value = sys.stdin.readline().rstrip("\r\n")
    if not value:
        raise click.UsageError(f"no {what} on stdin (to clear it, give '' instead of '-')")
    return value


@env.command("rotate-source-write-key")
@click.argument("name")
@click.option(
    "--grace-seconds",
    type=click.IntRange(0, 365 * 24 * 3600),
    default=None,
    help="How long the old key keeps working (default SOURCE_WRITE_KEY_GRACE_SECONDS);"
    " 0 revokes it at once.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def env_rotate_source_write_key(name: str, grace_seconds: int | None, as_json: bool) -> None:
    """Give the environment a new source write key for the /v1 intake (shown only now)."""
    from integration.outbound.events import rotate_source_write_key_by_name

    async def rotate(session: AsyncSession, settings: Settings) -> dict[str, Any]:
        env, key = await rotate_source_write_key_by_name(session, settings, name, grace_seconds)
        until = env.previous_source_write_key_expires_at
        return {
            "id": str(env.id),
            "name": name,
            "source_write_key": key,
            "previous_source_write_key_valid_until": until.isoformat() if until else None,
        }

    out = _db_call(rotate)
    if as_json:
        click.echo(orjson.dumps(out).decode())
        return
    until = out["previous_source_write_key_valid_until"]
    click.echo(
        f"{name}: new source write key (shown once); the old one "
        + (f"works until {until}:" if until else "no longer works:")
    )
    click.echo(out["source_write_key"])


@env.command("test")
@click.argument("name")
def env_test(name: str) -> None:
    """Send one test event to Segment with the environment's write key and report the answer."""
    from integration.outbound.connection import test_by_name

    result = _db_call(lambda s, cfg: test_by_name(s, cfg, name), decrypts=True)
    click.echo(result.summary)
    if not result.ok:
        sys.exit(1)


@main.group("secret-key")
def secret_key() -> None:
    """SECRET_KEY: rotate the key that encrypts write keys and signing secrets."""


@secret_key.command("rotate")
def secret_key_rotate() -> None:
    """Re-encrypt every stored secret with SECRET_KEY (opening them with SECRET_KEY_PREVIOUS)."""
    from integration.crypto import SecretBox
    from integration.keyring import Rotated, rotate
    from integration.store.db import make_engine, make_sessionmaker

    settings = _settings("database_url", "secret_key", "secret_key_previous")

    async def main() -> Rotated:
        engine = make_engine(settings, pool_size=1)
        try:
            return await rotate(make_sessionmaker(engine), SecretBox.of(settings))
        finally:
            await engine.dispose()

    try:
        done = asyncio.run(main())
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"re-encrypted {done.secrets} secret(s) of {done.environments} environment(s) and the"
        " canary with SECRET_KEY; SECRET_KEY_PREVIOUS can now be removed"
    )
