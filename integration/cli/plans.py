"""`plans`: an environment's tracking plan per direction: show it, set a new version from a
file, draft one from what was stored lately, promote it to another environment."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click
import orjson

from integration.cli.common import JSON_OPTION, db_call, echo_json, environment
from integration.config import Settings

if TYPE_CHECKING:  # only for annotations (see common.py)
    from sqlalchemy.ext.asyncio import AsyncSession

ACTOR = "command line"
DIRECTION = click.argument("direction", type=click.Choice(["inbound", "outbound"]))


@click.group()
def plans() -> None:
    """Tracking plans: what each environment's messages may be, per direction (inbound: what
    Segment's webhook sends us; outbound: what we send to Segment)."""


def _view(row: Any) -> dict[str, Any]:
    from integration.plans.schemas import PlanOut

    return PlanOut.of(row).model_dump(mode="json")


def _echo(plan: dict[str, Any], as_json: bool) -> None:
    if as_json:
        echo_json(plan)
        return
    click.echo(
        f"version {plan['version']} of {plan['direction']}, by {plan['created_by']} at"
        f" {plan['created_at']}: unplanned events {plan['unplanned_event']}, unplanned or"
        f" invalid properties {plan['unplanned_property']}"
    )
    click.echo(orjson.dumps(plan["plan"], option=orjson.OPT_INDENT_2).decode())


@plans.command("show")
@click.argument("name")
@DIRECTION
@JSON_OPTION
def plans_show(name: str, direction: str, as_json: bool) -> None:
    """Show the plan in force (NAME: the environment's name or id)."""
    from integration.plans import service

    async def read(session: AsyncSession, settings: Settings) -> dict[str, Any]:
        env = await environment(session, name)
        return _view(await service.in_force(session, env.id, direction))

    _echo(db_call(read), as_json)


@plans.command("set")
@click.argument("name")
@DIRECTION
@click.argument("plan_file", type=click.File("rb"))
@click.option(
    "--unplanned-event",
    type=click.Choice(["allow", "quarantine"]),
    default="allow",
    show_default=True,
    help="An event the plan does not list: allowed, or held in quarantine.",
)
@click.option(
    "--unplanned-property",
    type=click.Choice(["keep", "quarantine"]),
    default="keep",
    show_default=True,
    help="A property not in the plan, or breaking its rule: kept, or moved to quarantine.",
)
@JSON_OPTION
def plans_set(
    name: str,
    direction: str,
    plan_file: Any,
    unplanned_event: str,
    unplanned_property: str,
    as_json: bool,
) -> None:
    """Set the plan from PLAN_FILE (JSON, `-` for stdin) as a new version."""
    from integration.plans import service
    from integration.plans.document import Settings as PlanSettings

    try:
        raw = orjson.loads(plan_file.read())
    except orjson.JSONDecodeError as exc:
        raise click.ClickException(f"{plan_file.name} is not JSON: {exc}") from None
    chosen = PlanSettings.model_validate(
        {"unplanned_event": unplanned_event, "unplanned_property": unplanned_property}
    )

    async def write(session: AsyncSession, settings: Settings) -> dict[str, Any]:
        env = await environment(session, name)
        return _view(await service.save(session, env.id, direction, raw, chosen, created_by=ACTOR))

    _echo(db_call(write), as_json)


@plans.command("draft")
@click.argument("name")
@DIRECTION
@click.option("--days", type=click.IntRange(1, 90), default=7, show_default=True)
def plans_draft(name: str, direction: str, days: int) -> None:
    """Print a plan drafted from the events stored in the last DAYS days, to edit and `set`;
    nothing is saved."""
    from integration.plans import service

    async def read(session: AsyncSession, settings: Settings) -> dict[str, Any]:
        env = await environment(session, name)
        return await service.draft_from_events(session, env.id, direction, days)

    click.echo(orjson.dumps(db_call(read), option=orjson.OPT_INDENT_2).decode())


@plans.command("promote")
@click.argument("name")
@DIRECTION
@click.option("--to", "target", required=True, help="The environment (name or id) to copy to.")
@JSON_OPTION
def plans_promote(name: str, direction: str, target: str, as_json: bool) -> None:
    """Copy the plan in force, with its settings, to another environment as a new version."""
    from integration.plans import service

    async def write(session: AsyncSession, settings: Settings) -> dict[str, Any]:
        source, to = await environment(session, name), await environment(session, target)
        return _view(await service.promote(session, source.id, to.id, direction, created_by=ACTOR))

    _echo(db_call(write), as_json)
