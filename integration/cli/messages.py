"""`messages show`: the lifecycle of one message, in either direction, oldest first."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from integration.cli.common import JSON_OPTION, db_call, echo_json, environment
from integration.config import Settings

if TYPE_CHECKING:  # only for annotations (see common.py)
    from sqlalchemy.ext.asyncio import AsyncSession


@click.group()
def messages() -> None:
    """Trace a message by its messageId."""


@messages.command("show")
@click.argument("name")
@click.argument("message_id")
@click.option(
    "--direction", type=click.Choice(["inbound", "outbound"]), help="Only this direction."
)
@JSON_OPTION
def messages_show(name: str, message_id: str, direction: str | None, as_json: bool) -> None:
    """What happened to MESSAGE_ID in environment NAME: when it was received, redelivered and
    what it changed; when it was accepted for Segment, each attempt with Segment's status, and
    whether it was delivered or went dead and why."""
    from integration.admin.ledger import trace

    async def read(session: AsyncSession, settings: Settings) -> dict[str, Any]:
        env = await environment(session, name)
        return await trace(session, env, message_id, direction)

    found = db_call(read)
    if as_json:
        echo_json(found)
        return
    states = ", ".join(f"{d} {s}" for d, s in found["state"].items())
    click.echo(f"{message_id} in {name}: {states}")
    for step in found["lifecycle"]:
        click.echo(f"  {step['at']}  {step['direction']:<8} {_describe(step)}")
        if step.get("mapping_error"):
            click.echo(f"      {step['mapping_error']}")


def _describe(step: dict[str, Any]) -> str:
    name = step["step"]
    if name == "stored":
        changed = step["changed"]
        parts = [f"{k} {_ids(v)}" for k, v in changed.items()]
        return f"received, stored ({step['type']}); changed: {', '.join(parts) or 'nothing'}"
    if name == "redelivered":
        return f"redelivered {step['times']} time(s), the last at this time; changed nothing"
    if name == "accepted":
        return f"accepted for Segment ({step['type']} {step['event'] or ''})".replace(" )", ")")
    status = step.get("segment_status")
    answer = f" Segment answered {status}" if status else ""
    detail = f": {step['detail']}" if step.get("detail") else ""
    return f"{name}{answer}{detail}"


def _ids(value: Any) -> str:
    if isinstance(value, dict):
        return " ".join(str(v) for k, v in value.items() if k != "traits")
    return str(value)
