"""`deliveries`: the outbox of an environment as an operator sees it, replaying dead ones, and
resuming a delivery its breaker paused."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from integration.cli.common import (
    JSON_OPTION,
    db_call,
    delivery_status,
    echo_json,
    environment,
    limit_option,
)
from integration.config import Settings

if TYPE_CHECKING:  # only for annotations (see common.py)
    from sqlalchemy.ext.asyncio import AsyncSession


@click.group()
def deliveries() -> None:
    """List outbound deliveries to Segment, replay dead ones, resume a paused delivery."""


@deliveries.command("list")
@click.argument("name")
@click.option("--status", callback=delivery_status, help="Only these: pending, delivered or dead.")
@limit_option()
@JSON_OPTION
def deliveries_list(name: str, status: str | None, limit: int, as_json: bool) -> None:
    """List an environment's deliveries, newest first (NAME: its name or id)."""
    from integration.admin.schemas import Delivery
    from integration.outbound import outbox

    async def read(session: AsyncSession, settings: Settings) -> list[dict[str, Any]]:
        env = await environment(session, name)
        rows = await outbox.list_deliveries(
            session, env.id, status=status, before_id=None, limit=limit
        )
        return [Delivery.of(row).model_dump(mode="json") for row in rows]

    rows = db_call(read)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo(f"no {status or ''} deliveries in {name}".replace("  ", " "))
    for row in rows:
        answer = f"  segment={row['response_status']}" if row["response_status"] else ""
        error = f"  error={row['last_error']}" if row["last_error"] else ""
        click.echo(
            f"{row['id']:>8}  {row['status']:<9} {row['type']:<8} {row['message_id']}"
            f"  attempts={row['attempts']}  created={row['created_at']}{answer}{error}"
        )


@deliveries.command("replays")
@click.argument("name")
@limit_option()
@JSON_OPTION
def deliveries_replays(name: str, limit: int, as_json: bool) -> None:
    """The record of replays, newest first: who replayed, the filter, how many rows it queued
    (NAME: the environment's name or id)."""
    from integration.admin.schemas import ReplayRecord
    from integration.outbound import outbox

    async def read(session: AsyncSession, settings: Settings) -> list[dict[str, Any]]:
        env = await environment(session, name)
        rows = await outbox.list_replays(session, env.id, before_id=None, limit=limit)
        return [
            ReplayRecord.model_validate(r, from_attributes=True).model_dump(mode="json")
            for r in rows
        ]

    rows = db_call(read)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo(f"nothing replayed in {name}")
    for row in rows:
        chosen = ", ".join(f"{k}={v}" for k, v in row["filter"].items())
        click.echo(
            f"{row['created_at']}  {row['actor']}  queued {row['queued']} of"
            f" {row['matched']}  {chosen}"
        )


@deliveries.command("replay")
@click.argument("name")
@click.option("--id", "ids", type=click.IntRange(min=1), multiple=True, help="A delivery id.")
@click.option("--message-id", "message_ids", multiple=True, help="A delivery's messageId.")
@click.option(
    "--status",
    type=click.Choice(["dead", "delivered"]),
    default="dead",
    show_default=True,
    help="dead: send again; delivered: re-send (Segment dedupes by messageId).",
)
@click.option("--from", "since", help="Accepted at or after (ISO-8601).")
@click.option("--to", "until", help="Accepted before (ISO-8601).")
@click.option("--event", help="Only track events of this name.")
@click.option("--type", "kind", help="Only this type (track, identify, ...).")
@click.option("--user-id", help="Only this userId's messages.")
@click.option(
    "--dry-run", is_flag=True, help="Count and show what would be queued; change nothing."
)
@JSON_OPTION
def deliveries_replay(
    name: str,
    ids: tuple[int, ...],
    message_ids: tuple[str, ...],
    status: str,
    since: str | None,
    until: str | None,
    event: str | None,
    kind: str | None,
    user_id: str | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Queue deliveries again by a filter (dead ones by default), with a fresh retry budget and
    their messageIds kept; at most 1,000 per call, oldest first (--id and --message-id
    repeat). --dry-run counts them and changes nothing."""
    import getpass

    from pydantic import ValidationError

    from integration.admin.deliveries import replay_by
    from integration.admin.schemas import ReplayRequest

    try:  # the admin API's own body: its rules (ids in range, no NUL) hold here too
        asked = ReplayRequest.model_validate(
            {
                "ids": list(ids) or None,
                "message_ids": list(message_ids) or None,
                "status": status,
                "from": since,
                "to": until,
                "event": event,
                "type": kind,
                "user_id": user_id,
                "dry_run": dry_run,
            }
        )
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        option = "--" + str(first["loc"][0]).replace("_", "-").removesuffix("s")
        raise click.BadParameter(first["msg"], param_hint=option) from None

    async def replay(session: AsyncSession, settings: Settings) -> dict[str, Any]:
        env = await environment(session, name)
        actor = f"command line ({getpass.getuser()})"
        return (await replay_by(session, env.id, asked, actor=actor)).model_dump(mode="json")

    done = db_call(replay, wakes=True)
    if as_json:
        echo_json(done)
        return
    n = done["queued"]
    noun = f"{status} deliver{'y' if n == 1 else 'ies'}"
    if done["dry_run"]:
        click.echo(f"dry run: would replay {n} {noun} of {name} (matched {done['matched']})")
        for row in done["sample"]:
            click.echo(
                f"  {row['id']:>8}  {row['type']:<8} {row['message_id']}"
                f"  {row['event'] or ''}  created={row['created_at']}"
            )
    else:
        click.echo(f"replayed {n} {noun} of {name}")
    if done["more"]:
        click.echo(f"more match than the {done['limit']} one call queues: run it again")


@deliveries.command("resume")
@click.argument("name")
@JSON_OPTION
def deliveries_resume(name: str, as_json: bool) -> None:
    """Resume an environment's delivery that its breaker paused after Segment kept failing
    (OUTBOX_BREAKER_PAUSE_AFTER_SECONDS): the held deliveries go at once."""
    from integration.outbound import breaker

    async def resume(session: AsyncSession, settings: Settings) -> tuple[bool, str | None]:
        env = await environment(session, name)
        state = await breaker.status(session, env.id)
        return await breaker.resume(session, env.id, by="cli"), state.last_error

    resumed, last_error = db_call(resume, wakes=True)
    if as_json:
        echo_json({"resumed": resumed})
    elif resumed:
        click.echo(f"resumed delivery of {name} (it failed with: {last_error})")
    else:
        click.echo(f"delivery of {name} was not paused; nothing to resume")
