"""`env`: create, list, change, test, rotate the webhook key of, and delete environments,
through the services the admin API calls."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from integration.cli.common import JSON_OPTION, db_call, echo_json, settings, shown
from integration.config import Settings

if TYPE_CHECKING:  # only for annotations: SQLAlchemy alone takes 0.7 s to import
    from sqlalchemy.ext.asyncio import AsyncSession


@click.group()
def env() -> None:
    """Create, list, configure, rotate and delete environments."""


@env.command("create")
@click.argument("name")
@JSON_OPTION
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

    out = db_call(create)
    if as_json:
        echo_json(out)
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
@JSON_OPTION
def env_list(as_json: bool) -> None:
    """List environments with their settings (secrets masked)."""
    from integration.crypto import SecretBox
    from integration.environments import service as environments

    async def describe_all(session: AsyncSession, settings: Settings) -> list[dict[str, Any]]:
        box = SecretBox.of(settings)
        return [
            environments.describe(e, box).model_dump(mode="json")
            for e in await environments.list_all(session)
        ]

    rows = db_call(describe_all, decrypts=True)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no environments yet: create one with `env create NAME`")
    for row in rows:
        stream = "on" if row["stream_enabled"] else "off"
        copies = "on" if row["store_outbound_events"] else "off"
        retention = row["retention_days"]
        click.echo(
            f"{row['name']:<16} {row['id']}  stream={stream}"
            f"  write_key={shown(row['segment_write_key'])}"
            f"  signing_secret={shown(row['webhook_signing_secret'])}"
            f"  source_write_key={shown(row['source_write_key_hint'])}"
            f"  company_property={row['company_property']}  api={row['segment_api_url']}"
            f"  store_outbound_events={copies}"
            f"  cors_origins={','.join(row['cors_allowed_origins']) or 'none'}"
            f"  retention={f'{retention} days' if retention else 'forever'}"
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
@click.option(
    "--retention-days",
    help="Expire events older than this many days ('forever' keeps them; the default).",
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
    retention_days: str | None,
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
    if retention_days is not None:
        changes["retention_days"] = _retention(retention_days)
    if not changes:
        raise click.UsageError("nothing to set; see --help")
    from integration.outbound.events import change_settings_by_name

    changed = db_call(lambda s, cfg: change_settings_by_name(s, cfg, name, changes), decrypts=True)
    click.echo(f"{name}: updated {', '.join(changed) or 'nothing (already so)'}")


def _listed(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _retention(value: str) -> int | None:
    if value.lower() == "forever":
        return None
    if not value.isascii() or not value.isdigit():
        raise click.BadParameter(
            "a whole number of days, or 'forever'", param_hint="--retention-days"
        )
    return int(value)


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


@env.command("test")
@click.argument("name")
def env_test(name: str) -> None:
    """Send one test event to Segment with the environment's write key and report the answer."""
    from integration.outbound.connection import test_by_name

    result = db_call(lambda s, cfg: test_by_name(s, cfg, name), decrypts=True)
    click.echo(result.summary)
    if not result.ok:
        sys.exit(1)


@env.command("rotate-key")
@click.argument("name")
@click.option(
    "--grace-seconds",
    type=int,
    default=None,
    help="How long the old key keeps working (default WEBHOOK_KEY_GRACE_SECONDS); 0 revokes"
    " it at once, for a leaked key.",
)
@JSON_OPTION
def env_rotate_key(name: str, grace_seconds: int | None, as_json: bool) -> None:
    """Give the environment a new webhook key and print its webhook URL (shown only now)."""
    from pydantic import ValidationError

    from integration.environments import service as environments
    from integration.environments.schemas import RotateRequest
    from integration.outbound import events

    try:  # the admin API's own rule for the grace period (0 to a year)
        given = {} if grace_seconds is None else {"grace_seconds": grace_seconds}
        asked = RotateRequest.model_validate(given).grace_seconds
    except ValidationError as exc:
        raise click.BadParameter(exc.errors()[0]["msg"], param_hint="--grace-seconds") from None

    async def rotate(session: AsyncSession, settings: Settings) -> dict[str, Any]:
        grace = settings.webhook_key_grace_seconds if asked is None else asked
        env = await environments.by_name(session, name)
        key = await events.rotate_webhook_key(session, env, grace_seconds=grace)
        until = env.previous_webhook_key_expires_at
        return {
            "id": str(env.id),
            "name": name,
            "webhook_url": settings.webhook_url(key),
            "webhook_key": key,
            "previous_key_valid_until": until.isoformat() if until else None,
        }

    out = db_call(rotate)
    if as_json:
        echo_json(out)
        return
    until = out["previous_key_valid_until"]
    click.echo(f"Rotated the webhook key of {name}.")
    click.echo(f"The old key works until {until}." if until else "The old key is revoked now.")
    click.echo("New webhook URL (shown once; paste it into Segment's Webhooks destination):")
    click.echo(out["webhook_url"])


@env.command("rotate-source-write-key")
@click.argument("name")
@click.option(
    "--grace-seconds",
    type=click.IntRange(0, 365 * 24 * 3600),
    default=None,
    help="How long the old key keeps working (default SOURCE_WRITE_KEY_GRACE_SECONDS);"
    " 0 revokes it at once.",
)
@JSON_OPTION
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

    out = db_call(rotate)
    if as_json:
        echo_json(out)
        return
    until = out["previous_source_write_key_valid_until"]
    click.echo(
        f"{name}: new source write key (shown once); the old one "
        + (f"works until {until}:" if until else "no longer works:")
    )
    click.echo(out["source_write_key"])


@env.command("delete")
@click.argument("name")
@click.option("--force", is_flag=True, help="Delete it with all its data (users, events, ...).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def env_delete(name: str, force: bool, yes: bool) -> None:
    """Delete an environment; refused while it holds data unless --force."""
    from integration.environments import service as environments
    from integration.errors import Conflict

    settings("database_url", deletes="env delete")  # says which instance before asking
    if not yes:
        what = " and ALL its data" if force else ""
        click.confirm(f"Delete environment {name}{what}? This cannot be undone", abort=True)

    async def delete(session: AsyncSession, settings: Settings) -> str:
        env = await environments.by_name(session, name)
        try:
            await environments.delete(session, env, force=force)
        except Conflict as exc:
            if exc.error != "environment_not_empty":
                raise
            raise Conflict(
                f"{name} holds data (users, events or deliveries); add --force to delete it"
                " with all its data",
                error=exc.error,
            ) from None
        return str(env.id)

    env_id = db_call(delete, deletes="env delete")
    click.echo(f"Deleted environment {name} ({env_id}).")
