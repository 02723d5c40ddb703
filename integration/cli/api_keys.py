"""`api-keys`: an environment's scoped API keys (publish, read), as the admin API makes them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from integration.cli.common import JSON_OPTION, db_call, echo_json, environment
from integration.config import Settings

if TYPE_CHECKING:  # only for annotations (see common.py)
    from sqlalchemy.ext.asyncio import AsyncSession


@click.group("api-keys")
def api_keys() -> None:
    """Create, list and revoke an environment's API keys (scopes: publish, read)."""


@api_keys.command("create")
@click.argument("name")
@click.argument("key_name")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    help="publish (send product events) or read (users, companies, events, stats,"
    " deliveries); repeat for both.",
)
@JSON_OPTION
def api_keys_create(name: str, key_name: str, scopes: tuple[str, ...], as_json: bool) -> None:
    """Create an API key KEY_NAME for environment NAME and print it (shown only now)."""
    from integration.environments import api_keys as keys
    from integration.errors import AppError

    try:  # the admin API's rules for the body
        asked = keys.check(key_name, list(scopes))
    except AppError as exc:
        raise click.UsageError(exc.detail) from None

    async def create(session: AsyncSession, settings: Settings) -> dict[str, Any]:
        env = await environment(session, name)
        return (await keys.create(session, env, asked)).model_dump(mode="json")

    out = db_call(create)
    if as_json:
        echo_json(out)
        return
    click.echo(
        f"Created API key {key_name} of {name} ({out['id']}), scopes: {', '.join(out['scopes'])}."
    )
    click.echo("The key (shown once; send it as Authorization: Bearer <key>):")
    click.echo(out["key"])


@api_keys.command("list")
@click.argument("name")
@JSON_OPTION
def api_keys_list(name: str, as_json: bool) -> None:
    """List an environment's API keys: name, id, scopes and the key's last characters."""
    from integration.environments import api_keys as keys

    async def read(session: AsyncSession, settings: Settings) -> list[dict[str, Any]]:
        env = await environment(session, name)
        return [keys.describe(k).model_dump(mode="json") for k in await keys.list_for(session, env)]

    rows = db_call(read)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo(
            f"no API keys in {name}: create one with"
            f" `api-keys create {name} KEY_NAME --scope publish`"
        )
    for row in rows:
        click.echo(
            f"{row['name']:<20} {row['id']}  scopes={','.join(row['scopes'])}"
            f"  key={row['key_hint']}  created={row['created_at']}"
        )


@api_keys.command("revoke")
@click.argument("name")
@click.argument("key")
def api_keys_revoke(name: str, key: str) -> None:
    """Revoke API key KEY (its name or id) of environment NAME: it stops working at once."""
    from integration.environments import api_keys as keys

    async def revoke(session: AsyncSession, settings: Settings) -> str:
        env = await environment(session, name)
        return (await keys.revoke(session, env, key)).name

    revoked = db_call(revoke, deletes="api-keys revoke")
    click.echo(f"revoked API key {revoked} of {name}")
