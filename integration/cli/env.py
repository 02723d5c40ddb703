"""`env`: create, list, show, change, test, rotate the keys of (the webhook key, the intake
write key), and delete environments, through the services the admin API calls."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from integration.cli.common import JSON_OPTION, db_call, echo_json, settings, shown
from integration.config import Settings

if TYPE_CHECKING:  # only for annotations: SQLAlchemy alone takes 0.7 s to import
    from sqlalchemy.ext.asyncio import AsyncSession

    from integration.environments.service import KeysWouldEndEarly, Rotated


@click.group()
def env() -> None:
    """Create, list, configure, rotate and delete environments."""


@env.command("create")
@click.argument("name")
@JSON_OPTION
def env_create(name: str, as_json: bool) -> None:
    """Create an environment and print its webhook URL and its intake write key (the keys are
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
        "Intake write key (shown once; Segment libraries and tools publish to our /v1 intake"
        f" with it, host {out['tracking_api_host']}; not your Segment write key):"
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
        envs = await environments.list_all(session)
        previous = await environments.previous_keys(session, [e.id for e in envs])
        return [
            environments.describe(e, box, previous=previous[e.id]).model_dump(mode="json")
            for e in envs
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
            f"  segment_write_key={shown(row['segment_write_key'])}"
            f"  signing_secret={shown(row['webhook_signing_secret'])}"
            f"  intake_write_key={shown(row['source_write_key_hint'])}"
            f"  company_property={row['company_property']}  api={row['segment_api_url']}"
            f"  store_outbound_events={copies}"
            f"  cors_origins={','.join(row['cors_allowed_origins']) or 'none'}"
            f"  retention={f'{retention} days' if retention else 'forever'}"
        )


@env.command("show")
@click.argument("name")
@JSON_OPTION
def env_show(name: str, as_json: bool) -> None:
    """Show one environment: its settings (secrets masked) and its keys, with every rotated-out
    key that still works and when it stops."""
    from integration.crypto import SecretBox
    from integration.environments import service as environments

    async def describe(session: AsyncSession, settings: Settings) -> dict[str, Any]:
        env = await environments.by_name(session, name)
        previous = (await environments.previous_keys(session, [env.id]))[env.id]
        view = environments.describe(env, SecretBox.of(settings), previous=previous)
        return view.model_dump(mode="json")

    out = db_call(describe, decrypts=True)
    if as_json:
        echo_json(out)
        return
    for line in _show_lines(out):
        click.echo(line)


def _show_lines(out: dict[str, Any]) -> list[str]:
    retention = out["retention_days"]
    lines = [
        f"{out['name']} ({out['id']})",
        "Webhook key (in the webhook URL):",
        f"  {out['webhook_key_hint']}  current",
        *_previous_lines(out["previous_webhook_keys"]),
        "Intake write key (Segment libraries and tools publish to our /v1 intake with it):",
        f"  {shown(out['source_write_key_hint'])}  current",
        *_previous_lines(out["previous_source_write_keys"]),
        f"Segment write key (we deliver to Segment with it): {shown(out['segment_write_key'])}",
        f"Segment API URL: {out['segment_api_url']}",
        f"Stream to Segment: {'on' if out['stream_enabled'] else 'off'}",
        f"Webhook signing secret: {shown(out['webhook_signing_secret'])}",
        f"Company property: {out['company_property']}",
        f"Store outbound events: {'on' if out['store_outbound_events'] else 'off'}",
        f"CORS origins (/v1 intake): {', '.join(out['cors_allowed_origins']) or 'none'}",
        f"Event retention: {f'{retention} days' if retention else 'forever'}",
        "Blocked ids (identify or merge no one): "
        + ("default: " if out["blocked_ids_default"] else "")
        + ", ".join(repr(i) for i in out["blocked_ids"]),
        f"Anonymous ids per user: at most {out['max_anonymous_ids_per_user']}",
        f"Merges of identified users: {'on' if out['allow_identified_merges'] else 'off'}",
    ]
    return lines


def _previous_lines(keys: list[dict[str, Any]]) -> list[str]:
    return [f"  {k['hint']}  works until {_time(k['valid_until'])}" for k in keys]


@env.command("set")
@click.argument("name")
@click.option(
    "--write-key",
    help="Segment write key: the write key of your HTTP API source in Segment, which events"
    " are delivered with ('' clears it; '-' reads it from stdin, or asks).",
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
@click.option(
    "--blocked-ids",
    help="Ids that never identify or merge anyone, comma-separated ('default': the usual"
    " placeholders such as 0, null, undefined; '' blocks only blank ids).",
)
@click.option(
    "--max-anonymous-ids-per-user",
    type=int,
    help="No new anonymousId is linked to a user that has this many (default 100).",
)
@click.option(
    "--identified-merges",
    type=click.Choice(["on", "off"]),
    help="Apply an alias of one identified user into another (default off: a conflict).",
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
    blocked_ids: str | None,
    max_anonymous_ids_per_user: int | None,
    identified_merges: str | None,
) -> None:
    """Change an environment's settings.

    A secret given as '-' is read from stdin (a pipe) or asked for without echo (a terminal),
    so it never sits in the shell's history or in the process list."""
    if write_key == "-" and signing_secret == "-":
        raise click.UsageError("only one of --write-key and --signing-secret can be '-'")
    if write_key == "-":
        write_key = _read_secret("Segment write key")
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
        "max_anonymous_ids_per_user": max_anonymous_ids_per_user,
        "allow_identified_merges": (
            None if identified_merges is None else identified_merges == "on"
        ),
    }
    changes = {k: v for k, v in changes.items() if v is not None}
    if blocked_ids is not None:
        changes["blocked_ids"] = None if blocked_ids == "default" else _listed(blocked_ids)
    if retention_days is not None:
        changes["retention_days"] = _retention(retention_days)
    if not changes:
        raise click.UsageError("nothing to set; see --help")

    async def change(session: AsyncSession, settings: Settings) -> list[str]:
        from integration.crypto import SecretBox
        from integration.environments import service as environments
        from integration.outbound import events

        env = await environments.by_name(session, name)
        box, hosts = SecretBox.of(settings), settings.segment_api_hosts
        return await events.change_settings(session, env, box, changes, allowlist=hosts)

    changed = db_call(change, decrypts=True)
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
    """Send one test event to Segment with the environment's Segment write key and report the
    answer."""
    from integration.outbound.connection import test_by_name

    result = db_call(lambda s, cfg: test_by_name(s, cfg, name), decrypts=True)
    click.echo(result.summary)
    if not result.ok:
        sys.exit(1)


EARLY_OPTION = click.option(
    "--end-previous-keys-early",
    "end_early",
    is_flag=True,
    help="End earlier rotated-out keys with the replaced one even where they were promised"
    " longer (without it such a rotation asks, or is refused when it cannot ask).",
)


Attempt = Callable[[bool], "dict[str, Any] | KeysWouldEndEarly"]


def _rotate_asking(attempt: Attempt, end_early: bool) -> dict[str, Any]:
    """Rotate; when that would end earlier keys sooner than promised, say which and ask (in a
    terminal), else refuse pointing at --end-previous-keys-early."""
    from integration.environments.service import KEY_NAMES

    first = attempt(end_early)
    if isinstance(first, dict):
        return first
    click.echo(
        f"This rotation would end {len(first.keys)} earlier {KEY_NAMES[first.kind]}(s) sooner"
        " than promised:",
        err=True,
    )
    for key in first.keys:
        click.echo(f"  …{key.key_hint}  promised until {_time(key.expires_at)}", err=True)
    click.echo(f"A grace of at least {first.needed_seconds} seconds keeps every promise.", err=True)
    if not sys.stdin.isatty():
        raise click.ClickException(
            "not rotated: give a longer --grace-seconds, or add --end-previous-keys-early to"
            " end them " + ("now" if first.ends <= _now() else f"at {_time(first.ends)}")
        )
    click.confirm("End them early and rotate?", abort=True, err=True)
    done = attempt(True)
    assert isinstance(done, dict)  # ending early is never refused
    return done


def _rotation(
    name: str,
    kind: str,
    grace_seconds: int | None,
    shown: Callable[[Settings, Rotated], dict[str, Any]],
) -> Attempt:
    """How both rotate commands rotate: the environment by name, through the one door for
    changes (outbound.events, which announces the rotation), with the configured grace unless
    one was given. A rotation that would end earlier keys early comes back, to be asked about."""

    def attempt(early: bool) -> dict[str, Any] | KeysWouldEndEarly:
        async def rotate(
            session: AsyncSession, settings: Settings
        ) -> dict[str, Any] | KeysWouldEndEarly:
            from integration.environments import service as environments
            from integration.outbound import events

            door, default = {
                "webhook": (events.rotate_webhook_key, settings.webhook_key_grace_seconds),
                "source_write": (
                    events.rotate_source_write_key,
                    settings.source_write_key_grace_seconds,
                ),
            }[kind]
            env = await environments.by_name(session, name)
            grace = default if grace_seconds is None else grace_seconds
            try:
                rotated = await door(
                    session, env, grace_seconds=grace, end_previous_keys_early=early
                )
            except environments.KeysWouldEndEarly as exc:
                return exc
            return {"id": str(env.id), "name": name, **shown(settings, rotated)}

        return db_call(rotate)

    return attempt


def _now() -> datetime:
    return datetime.now(UTC)


def _time(value: datetime | str) -> str:
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _grace_option(default: str) -> Callable[[Any], Any]:
    return click.option(
        "--grace-seconds",
        type=click.IntRange(0, 365 * 24 * 3600),
        default=None,
        help=f"How long the key being replaced keeps working (default {default}); 0 revokes"
        " it at once, for a leaked key. Earlier rotated-out keys keep their own end times.",
    )


@env.command("rotate-key")
@click.argument("name")
@_grace_option("WEBHOOK_KEY_GRACE_SECONDS")
@EARLY_OPTION
@JSON_OPTION
def env_rotate_key(name: str, grace_seconds: int | None, end_early: bool, as_json: bool) -> None:
    """Give the environment a new webhook key and print its webhook URL (shown only now)."""

    def shown(settings: Settings, rotated: Rotated) -> dict[str, Any]:
        until = rotated.replaced_until
        return {
            "webhook_url": settings.webhook_url(rotated.key),
            "webhook_key": rotated.key,
            "previous_key_valid_until": until.isoformat() if until else None,
        }

    out = _rotate_asking(_rotation(name, "webhook", grace_seconds, shown), end_early)
    if as_json:
        echo_json(out)
        return
    until = out["previous_key_valid_until"]
    click.echo(f"Rotated the webhook key of {name}.")
    click.echo(
        f"The old key works until {_time(until)}." if until else "The old key is revoked now."
    )
    click.echo("New webhook URL (shown once; paste it into Segment's Webhooks destination):")
    click.echo(out["webhook_url"])


@env.command("rotate-source-write-key")
@click.argument("name")
@_grace_option("SOURCE_WRITE_KEY_GRACE_SECONDS")
@EARLY_OPTION
@JSON_OPTION
def env_rotate_source_write_key(
    name: str, grace_seconds: int | None, end_early: bool, as_json: bool
) -> None:
    """Give the environment a new intake write key, the key Segment libraries and tools
    publish to our /v1 intake with (shown only now)."""

    def shown(_settings: Settings, rotated: Rotated) -> dict[str, Any]:
        until = rotated.replaced_until
        return {
            "source_write_key": rotated.key,
            "previous_source_write_key_valid_until": until.isoformat() if until else None,
        }

    out = _rotate_asking(_rotation(name, "source_write", grace_seconds, shown), end_early)
    if as_json:
        echo_json(out)
        return
    until = out["previous_source_write_key_valid_until"]
    click.echo(
        f"{name}: new intake write key (shown once); the old one "
        + (f"works until {_time(until)}:" if until else "no longer works:")
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
