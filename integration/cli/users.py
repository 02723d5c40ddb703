"""`users`: read everything an environment holds about a user, or erase it (GDPR); list,
apply or dismiss the environment's identity conflicts; unmerge a merge."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from integration.cli.common import JSON_OPTION, db_call, echo_json, environment, run, settings
from integration.config import Settings

# Who applied or dismissed a conflict, or unmerged a merge, from here, as its row says.
CLI_ACTOR = "command line"

if TYPE_CHECKING:  # only for annotations (see common.py)
    from sqlalchemy.ext.asyncio import AsyncSession


@click.group()
def users() -> None:
    """Show or erase a user of an environment."""


@users.command("show")
@click.argument("name")
@click.argument("user_id")
@JSON_OPTION
def users_show(name: str, user_id: str, as_json: bool) -> None:
    """A user's traits, anonymous ids, companies and recent events."""
    from integration.admin.schemas import UserDetail
    from integration.inbound import queries

    async def read(session: AsyncSession, settings: Settings) -> dict[str, Any]:
        env = await environment(session, name)
        found = await queries.user_detail(session, env.id, user_id)
        return UserDetail.of(found).model_dump(mode="json")

    user = db_call(read)
    if as_json:
        echo_json(user)
        return
    click.echo(f"user {user['user_id']} of {name}")
    click.echo(f"  first seen {user['first_seen_at']}, last seen {user['last_seen_at']}")
    click.echo(f"  traits: {_compact(user['traits'])}")
    click.echo(f"  anonymous ids: {', '.join(user['anonymous_ids']) or 'none'}")
    click.echo(f"  companies: {', '.join(c['group_id'] for c in user['companies']) or 'none'}")
    click.echo(f"  recent events ({len(user['recent_events'])}):")
    for event in user["recent_events"]:
        click.echo(f"    {event['timestamp']}  {event['type']:<8} {event['name'] or ''}")


@users.command("identity")
@click.argument("name")
@click.argument("user_id")
@JSON_OPTION
def users_identity(name: str, user_id: str, as_json: bool) -> None:
    """A user's anonymous ids, the links and merges into and out of them, and the conflicts
    naming them (links and merges refused)."""
    from integration.admin.schemas import IdentityOut
    from integration.inbound import queries

    async def read(session: AsyncSession, settings: Settings) -> dict[str, Any]:
        env = await environment(session, name)
        found = await queries.identity(session, env.id, user_id)
        return IdentityOut.of(found).model_dump(mode="json")

    found = db_call(read)
    if as_json:
        echo_json(found)
        return
    click.echo(f"identity of {found['user_id']} in {name}")
    click.echo(f"  anonymous ids: {', '.join(found['anonymous_ids']) or 'none'}")
    for title, rows in (("merged in", found["merges_in"]), ("merged out", found["merges_out"])):
        click.echo(f"  {title} ({len(rows)}):")
        for r in rows:
            click.echo(
                f"    {r['at']}  {r['kind']:<5} {r['from_id']} -> {r['user_id']}  ({r['rule']};"
                f" events {r['events_moved']}, traits {r['traits_moved']},"
                f" memberships {r['memberships_moved']}; message {r['message_id']})"
            )
    click.echo(f"  conflicts ({len(found['conflicts'])}):")
    for c in found["conflicts"]:
        stays = f", stays with {c['existing_user_id']}" if c["existing_user_id"] else ""
        click.echo(
            f"    {c['at']}  {c['kind']}: {c['from_id']} -> {c['user_id']}{stays}"
            f" (message {c['message_id']})"
        )


@users.command("conflicts")
@click.argument("name")
@click.option(
    "--state", type=click.Choice(["open", "applied", "dismissed"]), help="Only conflicts in it."
)
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@JSON_OPTION
def users_conflicts(name: str, state: str | None, limit: int, as_json: bool) -> None:
    """The environment's identity conflicts (links and merges refused at ingest), newest
    first."""
    from integration.inbound import conflicts

    async def read(session: AsyncSession, settings: Settings) -> list[dict[str, Any]]:
        env = await environment(session, name)
        rows = await conflicts.listing(session, env.id, state, before_id=None, limit=limit)
        return [_conflict_view(r) for r in rows]

    found = db_call(read)
    if as_json:
        echo_json(found)
        return
    click.echo(f"identity conflicts of {name} ({len(found)}):")
    for c in found:
        click.echo(f"  {_conflict_line(c)}")


def _conflict_view(row: Any) -> dict[str, Any]:
    from integration.admin.schemas import IdentityConflictOut

    return IdentityConflictOut.model_validate(row, from_attributes=True).model_dump(mode="json")


def _conflict_line(c: dict[str, Any]) -> str:
    stays = f", stays with {c['existing_user_id']}" if c["existing_user_id"] else ""
    return (
        f"#{c['id']} {c['state']:<9} {c['at']}  {c['kind']}: {c['from_id']} -> {c['user_id']}"
        f"{stays} (message {c['message_id']})"
    )


def _resolve(name: str, conflict_id: int, verb: str, as_json: bool) -> None:
    """Apply or dismiss one conflict, as the admin API's POST does, and show it."""
    from integration.inbound import conflicts

    act = conflicts.apply if verb == "apply" else conflicts.dismiss

    async def write(session: AsyncSession, settings: Settings) -> dict[str, Any]:
        env = await environment(session, name)
        await act(session, env.id, conflict_id, CLI_ACTOR)
        return _conflict_view(await conflicts.one(session, env.id, conflict_id))

    done = db_call(write)
    if as_json:
        echo_json(done)
        return
    click.echo(_conflict_line(done))


@users.command("apply-conflict")
@click.argument("name")
@click.argument("conflict_id", type=click.IntRange(1))
@JSON_OPTION
def users_apply_conflict(name: str, conflict_id: int, as_json: bool) -> None:
    """Make the link or merge an identity conflict's message asked for (logged with rule
    operator); a conflict applied already stays as it is."""
    _resolve(name, conflict_id, "apply", as_json)


@users.command("dismiss-conflict")
@click.argument("name")
@click.argument("conflict_id", type=click.IntRange(1))
@JSON_OPTION
def users_dismiss_conflict(name: str, conflict_id: int, as_json: bool) -> None:
    """Dismiss an identity conflict: nothing changes but its state."""
    _resolve(name, conflict_id, "dismiss", as_json)


@users.command("unmerge")
@click.argument("name")
@click.argument("user_id")
@click.option("--merged-id", required=True, help="The id merged into the user (the previousId).")
@JSON_OPTION
def users_unmerge(name: str, user_id: str, merged_id: str, as_json: bool) -> None:
    """Take back the newest merge of --merged-id into USER_ID, as the admin API's POST
    .../unmerge does: its events, anonymous ids, companies and profile go back to the merged id.
    Undone already: nothing changes. Refused (exit 1) when USER_ID was merged into another
    since: unmerge that first."""
    from integration.admin.schemas import UnmergeOut
    from integration.inbound import unmerge

    async def write(session: AsyncSession, settings: Settings) -> dict[str, Any]:
        env = await environment(session, name)
        done = await unmerge.unmerge(session, env.id, user_id, merged_id, CLI_ACTOR)
        answer = UnmergeOut(
            user_id=user_id,
            merged_id=merged_id,
            merge_id=done.merge_id,
            undone_at=done.undone_at,
            already_undone=done.already_undone,
            restored=done.restored,
        )
        return answer.model_dump(mode="json")

    done = db_call(write)
    if as_json:
        echo_json(done)
        return
    if done["already_undone"]:
        click.echo(f"merge #{done['merge_id']} was undone at {done['undone_at']}: nothing changed")
    else:
        click.echo(f"unmerged {merged_id} from {user_id} (merge #{done['merge_id']})")
    back = done["restored"]
    click.echo(
        f"  back on {merged_id}: events {back.get('events', 0)}, anonymous ids"
        f" {back.get('anonymous_ids', 0)}, traits {back.get('traits', 0)}, memberships"
        f" {back.get('memberships', 0)}"
    )


def _compact(value: Any) -> str:
    import orjson

    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


@users.command("erase")
@click.argument("name")
@click.argument("user_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@JSON_OPTION
def users_erase(name: str, user_id: str, yes: bool, as_json: bool) -> None:
    """Erase a user (GDPR): profile, traits, anonymous ids, memberships, events and outbound
    messages, as the admin API's DELETE does; an audit row keeps only a digest of the id."""
    from integration.inbound import erasure
    from integration.inbound.digests import InstallKey
    from integration.store.db import make_engine, make_sessionmaker, transaction

    # says which instance, first
    config = settings("database_url", "secret_key", deletes="users erase")
    if not yes:
        click.confirm(f"Erase everything {name} holds about {user_id}?", abort=True)

    async def erase() -> dict[str, int]:
        engine = make_engine(config, pool_size=1)
        try:
            async with transaction(make_sessionmaker(engine)) as session:
                env = await environment(session, name)
            erased = await erasure.erase_by_admin(engine, env.id, user_id, InstallKey.of(config))
        finally:
            await engine.dispose()
        return erased.reported

    removed = run(erase())
    if as_json:
        echo_json({"user_id": user_id, "deleted": removed})
        return
    rows = ", ".join(f"{table} {count}" for table, count in removed.items())
    click.echo(f"erased {user_id} from {name}: {rows}")
