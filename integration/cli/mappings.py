"""`mappings`: an environment's mapping per direction, as the admin API keeps it: show, set
(checked, as a new version), versions, revert, promote, preview."""

from __future__ import annotations

from typing import IO, TYPE_CHECKING, Any

import click
import orjson

from integration.cli.common import JSON_OPTION, db_call, echo_json, environment
from integration.config import Settings

if TYPE_CHECKING:  # only for annotations (see common.py)
    from sqlalchemy.ext.asyncio import AsyncSession

    from integration.store.models import MappingVersion

DIRECTION = click.argument("direction", type=click.Choice(["inbound", "outbound"]))


@click.group("mappings")
def mappings() -> None:
    """An environment's mapping for inbound or outbound messages (Segment's mapping-kit)."""


@mappings.command("show")
@click.argument("name")
@DIRECTION
@JSON_OPTION
def mappings_show(name: str, direction: str, as_json: bool) -> None:
    """The current version of environment NAME's mapping for DIRECTION."""
    from integration.environments import mappings as service

    async def read(session: AsyncSession, settings: Settings) -> MappingVersion:
        return await service.current(session, await environment(session, name), direction)

    _print(name, db_call(read), as_json)


@mappings.command("set")
@click.argument("name")
@DIRECTION
@click.argument("mapping_file", type=click.File("rb"))
@click.option("--trigger", help="Which messages it maps, e.g. 'type = \"track\"'; default: all.")
@JSON_OPTION
def mappings_set(
    name: str, direction: str, mapping_file: IO[bytes], trigger: str | None, as_json: bool
) -> None:
    """Set the mapping (JSON from MAPPING_FILE, - for stdin): checked, then the next version."""
    from integration.environments import mappings as service

    mapping = _json_object(mapping_file, "MAPPING_FILE")

    async def change(session: AsyncSession, settings: Settings) -> MappingVersion:
        env = await environment(session, name)
        return await service.change(
            session, env, direction, trigger=trigger, mapping=mapping, by=_BY
        )

    _print(name, db_call(change), as_json)


@mappings.command("versions")
@click.argument("name")
@DIRECTION
@JSON_OPTION
def mappings_versions(name: str, direction: str, as_json: bool) -> None:
    """Every version of the mapping, newest first."""
    from integration.environments import mappings as service

    async def read(session: AsyncSession, settings: Settings) -> list[dict[str, Any]]:
        rows = await service.history(session, await environment(session, name), direction)
        return [service.describe(r).model_dump(mode="json") for r in rows]

    rows = db_call(read)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo(f"{name} has no {direction} mapping")
    for row in rows:
        trigger = row["trigger"] if row["trigger"] is not None else "(every message)"
        click.echo(f"v{row['version']:<4} {row['created_at']}  {row['created_by']}  {trigger}")


@mappings.command("revert")
@click.argument("name")
@DIRECTION
@JSON_OPTION
def mappings_revert(name: str, direction: str, as_json: bool) -> None:
    """Go back one version: the one before the current becomes current (as a new version)."""
    from integration.environments import mappings as service

    async def revert(session: AsyncSession, settings: Settings) -> MappingVersion:
        env = await environment(session, name)
        return await service.revert(session, env, direction, by=_BY)

    _print(name, db_call(revert), as_json)


@mappings.command("promote")
@click.argument("name")
@DIRECTION
@click.option("--to", "target", required=True, help="The environment (name or id) to promote to.")
@JSON_OPTION
def mappings_promote(name: str, direction: str, target: str, as_json: bool) -> None:
    """Make the current mapping of NAME the next version of environment TO's."""
    from integration.environments import mappings as service

    async def promote(session: AsyncSession, settings: Settings) -> MappingVersion:
        env = await environment(session, name)
        return await service.promote(session, env, direction, target, by=_BY)

    _print(target, db_call(promote), as_json)


@mappings.command("preview")
@click.argument("name")
@DIRECTION
@click.argument("message_file", type=click.File("rb"))
def mappings_preview(name: str, direction: str, message_file: IO[bytes]) -> None:
    """What the current mapping makes of the message in MESSAGE_FILE (- for stdin), as JSON:
    whether the trigger selects it, the mapped message, or the error. Nothing is saved."""
    from integration.environments import mappings as service

    message = _json_object(message_file, "MESSAGE_FILE")

    async def preview(session: AsyncSession, settings: Settings) -> dict[str, Any]:
        env = await environment(session, name)
        result = await service.preview(session, env, direction, message)
        return result.model_dump(mode="json")

    echo_json(db_call(preview))


_BY = "command line"


def _json_object(source: IO[bytes], what: str) -> dict[str, Any]:
    try:
        value = orjson.loads(source.read())
    except orjson.JSONDecodeError as exc:
        raise click.UsageError(f"{what} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise click.UsageError(f"{what} must hold a JSON object")
    return value


def _print(name: str, row: MappingVersion, as_json: bool) -> None:
    from integration.environments import mappings as service

    out = service.describe(row).model_dump(mode="json")
    if as_json:
        echo_json(out)
        return
    trigger = out["trigger"] if out["trigger"] is not None else "(every message)"
    click.echo(f"{name} {out['direction']} mapping, version {out['version']}: {trigger}")
    click.echo(orjson.dumps(out["mapping"], option=orjson.OPT_INDENT_2).decode())
