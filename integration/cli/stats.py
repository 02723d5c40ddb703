"""`stats` and `deletions`: what an operator checks first, and the erasure audit trail."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from integration.cli.common import (
    JSON_OPTION,
    db_call,
    echo_json,
    environment,
    limit_option,
    shown,
)
from integration.config import Settings

if TYPE_CHECKING:  # only for annotations (see common.py)
    from sqlalchemy.ext.asyncio import AsyncSession


@click.command()
@click.argument("name")
@click.option("--from", "since", help="The ledger's window: from (ISO-8601).")
@click.option("--to", "until", help="The ledger's window: to (excluded).")
@JSON_OPTION
def stats(name: str, since: str | None, until: str | None, as_json: bool) -> None:
    """Counts and last activity times of an environment, inbound and outbound, and its ledger
    (over --from/--to, or all time): received = stored + duplicates + refused + quarantined,
    accepted = delivered + pending + held + dead + quarantined."""
    from integration.admin.deliveries import parse_when
    from integration.admin.ledger import collect as ledger
    from integration.admin.stats import collect

    start, end = parse_when(since, "--from"), parse_when(until, "--to")

    async def read(session: AsyncSession, settings: Settings) -> dict[str, Any]:
        env = await environment(session, name)
        found = (await collect(session, env.id)).model_dump(mode="json")
        found["ledger"] = await ledger(session, env, since=start, until=end)
        return found

    found = db_call(read)
    if as_json:
        echo_json(found)
        return
    book = found.pop("ledger")
    click.echo(f"{name}")
    for key, value in found.items():
        when = "never" if value is None and key.endswith("_at") else shown(value)
        click.echo(f"  {key.replace('_', ' '):<20} {when}")
    click.echo(f"ledger, from {book['from'] or 'the start'} to {book['to'] or 'now'}")
    inbound, outbound = book["inbound"], book["outbound"]
    refused = ", ".join(f"{r.replace('_', ' ')} {n}" for r, n in inbound["refused"].items())
    click.echo(
        f"  inbound   received {inbound['received']} = stored {inbound['stored']}"
        f" + duplicates {inbound['duplicates']} + refused ({refused})"
        f" + quarantined {inbound['quarantined']}"
    )
    if inbound["blocked_ids"]:
        click.echo(f"            of the stored, {inbound['blocked_ids']} had a blocked userId")
    dead = ", ".join(f"{s} {n}" for s, n in sorted(outbound["dead"].items())) or "none"
    click.echo(
        f"  outbound  accepted {outbound['accepted']} = delivered {outbound['delivered']}"
        f" + pending {outbound['pending']} + held {outbound['held']} + dead ({dead})"
        f" + quarantined {outbound['quarantined']}"
    )
    click.echo("  (unknown webhook keys name no environment: counted on /metrics only)")


@click.group()
def deletions() -> None:
    """The audit trail of erased users (Segment deletes and `users erase`)."""


@deletions.command("list")
@click.argument("name")
@limit_option()
@JSON_OPTION
def deletions_list(name: str, limit: int, as_json: bool) -> None:
    """List erasures, newest first: a keyed HMAC of each userId (never the id), when, what, who;
    then how many deletes found nothing to erase (counted, not listed)."""
    from integration.admin.schemas import DeletionOut
    from integration.inbound import queries

    async def read(
        session: AsyncSession, settings: Settings
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        env = await environment(session, name)
        rows = await queries.list_deletions(session, env.id, before_id=None, limit=limit)
        listed = [
            DeletionOut.model_validate(d, from_attributes=True).model_dump(mode="json")
            for d in rows
        ]
        return listed, await queries.unmatched_deletes(session, env.id)

    rows, unmatched = db_call(read)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo(f"no erasures in {name}")
    for row in rows:
        removed = ", ".join(f"{t} {n}" for t, n in row["removed"].items())
        click.echo(
            f"{row['created_at']}  by {row['requested_by']:<7}  user hmac {row['user_id_hash']}"
            f"  removed: {removed or 'nothing'}"
        )
    if unmatched["count"]:
        click.echo(
            f"and {unmatched['count']} deletes of userIds {name} never held (counted, not listed;"
            f" the last at {unmatched['last_at']})"
        )
