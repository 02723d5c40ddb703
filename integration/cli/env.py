"""`env`: create, list, change, test, rotate the webhook key of, and delete environments,
through the services the admin API calls."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from integration.cli.common import JSON_OPTION, db_call, echo_json, shown
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
    """Create an environment and print its webhook URL (the key is shown only now)."""
    from integration.environments import service as environments

    async def create(session: AsyncSession, settings: Settings) -> dict[str, Any]:
        created = await environments.create(session, name)
        return {
            "id": str(created.environment.id),
            "name": name,
            "webhook_url": settings.webhook_url(created.webhook_key),
            "webhook_key": created.webhook_key,
        }

    out = db_call(create)
    if as_json:
        echo_json(out)
        return
    click.echo(f"Created environment {name} ({out['id']}).")
    click.echo("Webhook URL (shown once; paste it into Segment's Webhooks destination):")
    click.echo(out["webhook_url"])


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
        click.echo(
            f"{row['name']:<16} {row['id']}  stream={stream}"
            f"  write_key={shown(row['segment_write_key'])}"
            f"  signing_secret={shown(row['webhook_signing_secret'])}"
            f"  company_property={row['company_property']}  api={row['segment_api_url']}"
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
    }
    changes = {k: v for k, v in changes.items() if v is not None}
    if retention_days is not None:
        changes["retention_days"] = _retention(retention_days)
    if not changes:
        raise click.UsageError("nothing to set; see --help")
    from integration.outbound.events import change_settings_by_name

    changed = db_call(lambda s, cfg: change_settings_by_name(s, cfg, name, changes), decrypts=True)
    click.echo(f"{name}: updated {', '.join(changed) or 'nothing (already so)'}")


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


@env.command("delete")
@click.argument("name")
@click.option("--force", is_flag=True, help="Delete it with all its data (users, events, ...).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def env_delete(name: str, force: bool, yes: bool) -> None:
    """Delete an environment; refused while it holds data unless --force."""
    from integration.environments import service as environments
    from integration.errors import Conflict

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

    env_id = db_call(delete)
    click.echo(f"Deleted environment {name} ({env_id}).")
