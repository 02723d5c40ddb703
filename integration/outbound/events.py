"""Product events the platform itself emits into an environment's own stream, and the one door
for the changes that cause them: settings and key rotation. The admin API, the console and the
CLI all change an environment here, so each change is announced whoever makes it, in the
change's own transaction (the outbox row commits, or rolls back, with it).

They follow Segment's object-action naming and go through the same outbox as the host
product's events, so with the stream off they are not sent. `anonymousId` is
`environment-{id}`: these describe the environment, not a person.

- Segment Stream Enabled: the stream switch is turned on. Properties: environment.
- Segment Write Key Changed: a new write key is set while streaming. Properties: environment.
- Webhook Key Rotated: the webhook key is rotated while streaming.
  Properties: environment, grace_seconds.
- Source Write Key Rotated: the intake write key (the /v1 intake's) is rotated while streaming.
  Properties: environment, grace_seconds.
- Segment Connection Tested: `env test` or test-connection; sent directly, not through the outbox.
- Segment Delivery Paused: the environment's Segment failed every delivery round for
  OUTBOX_BREAKER_PAUSE_AFTER_SECONDS and delivery paused itself (outbound/breaker.py); sent
  once it resumes. Properties: environment, failing_since, last_error.
- Segment Delivery Resumed: a probe was accepted, or the operator resumed delivery.
  Properties: environment, resumed_by (`probe`, or the operator's door: api, console, cli).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import delete as delete_rows
from sqlalchemy.ext.asyncio import AsyncSession

from integration.crypto import SecretBox, hash_key, new_source_write_key, new_webhook_key
from integration.environments import identity
from integration.environments import service as environments
from integration.errors import BadRequest
from integration.outbound.publish import publish
from integration.store.models import Environment, PreviousKey

STREAM_ENABLED = "Segment Stream Enabled"
WRITE_KEY_CHANGED = "Segment Write Key Changed"
WEBHOOK_KEY_ROTATED = "Webhook Key Rotated"
SOURCE_WRITE_KEY_ROTATED = "Source Write Key Rotated"
CONNECTION_TESTED = "Segment Connection Tested"


def platform_event(env: Environment, event: str, **properties: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "anonymousId": f"environment-{env.id}",
        "event": event,
        "properties": {"environment": env.name, **properties},
    }


async def emit(session: AsyncSession, env: Environment, event: str, **properties: Any) -> None:
    await publish(session, env, platform_event(env, event, **properties))


async def change_settings(
    session: AsyncSession,
    env: Environment,
    box: SecretBox,
    changes: dict[str, Any],
    *,
    allowlist: frozenset[str] = frozenset(),
) -> list[str]:
    """Apply settings changes and say so in the environment's own stream; returns the names of
    settings that changed. Secrets are encrypted; an empty string or None clears one.
    `allowlist`: SEGMENT_API_ALLOWLIST's hosts."""
    environments.check_write_key_follows(env, changes, allowlist)
    changed: list[str] = []
    for field, value in changes.items():
        if field == "segment_write_key":
            secret = environments.check_secret(field, value)
            env.segment_write_key = box.encrypt(secret) if secret else None
        elif field == "webhook_signing_secret":
            secret = environments.check_secret(field, value)
            env.webhook_signing_secret = box.encrypt(secret) if secret else None
        elif field == "stream_enabled":
            if env.stream_enabled == environments.check_flag(field, value):
                continue
            env.stream_enabled = bool(value)
        elif field == "store_outbound_events":
            env.store_outbound_events = environments.check_flag(field, value)
        elif field == "cors_allowed_origins":
            env.cors_allowed_origins = environments.check_origins(value)
        elif field == "company_property":
            env.company_property = environments.check_company_property(value)
        elif field == "segment_api_url":
            env.segment_api_url = environments.check_api_url(value, allowlist)
        elif field == "retention_days":
            env.retention_days = environments.check_retention(value)
        elif field == "blocked_ids":
            env.blocked_ids = identity.check_blocked_ids(value)
        elif field == "max_anonymous_ids_per_user":
            env.max_anonymous_ids_per_user = identity.check_max_anonymous_ids(value)
        elif field == "allow_identified_merges":
            env.allow_identified_merges = environments.check_flag(field, value)
        else:
            raise BadRequest(f"unknown setting {field!r}", error="invalid_field", field=field)
        changed.append(field)
    if env.stream_enabled and not env.segment_write_key:
        raise BadRequest(
            "set segment_write_key before turning the stream on",
            error="invalid_field",
            field="stream_enabled",
        )
    await session.flush()
    if "stream_enabled" in changed and env.stream_enabled:
        await emit(session, env, STREAM_ENABLED)
    elif "segment_write_key" in changed and env.stream_enabled and env.segment_write_key:
        await emit(session, env, WRITE_KEY_CHANGED)
    return changed


async def _rotate(
    session: AsyncSession,
    env: Environment,
    kind: str,
    current: tuple[str | None, str | None],
    *,
    grace_seconds: int,
    end_previous_keys_early: bool,
) -> datetime | None:
    """Moves the current key (`current`: its digest and hint) among the previous keys with an
    end time of now + grace (grace 0: revoked now, not kept at all). Every earlier key keeps the
    time it was promised; one that would outlive the new grace is cut short only when asked,
    else `KeysWouldEndEarly`. Returns the replaced key's end time."""
    now = datetime.now(UTC)
    ends = now + timedelta(seconds=grace_seconds)
    await session.execute(
        delete_rows(PreviousKey).where(
            PreviousKey.environment_id == env.id,
            PreviousKey.kind == kind,
            PreviousKey.expires_at <= now,
        )
    )
    live = (await environments.previous_keys(session, [env.id]))[env.id]
    early = [k for k in live if k.kind == kind and k.expires_at > ends]
    if early and not end_previous_keys_early:
        raise environments.KeysWouldEndEarly(kind, early, ends, grace_seconds)
    for key in early:
        if grace_seconds == 0:
            await session.delete(key)
        else:
            key.expires_at = ends
    digest, hint = current
    if grace_seconds == 0 or digest is None:
        return None
    session.add(
        PreviousKey(
            key_hash=digest, environment_id=env.id, kind=kind, key_hint=hint or "", expires_at=ends
        )
    )
    return ends


async def _lock(session: AsyncSession, env: Environment) -> None:
    """Two rotations at once take turns: the second sees the key the first made current (and
    moves that one among the previous keys, rather than the same one twice)."""
    await session.refresh(env, with_for_update=True)


async def rotate_webhook_key(
    session: AsyncSession,
    env: Environment,
    *,
    grace_seconds: int,
    end_previous_keys_early: bool = False,
) -> environments.Rotated:
    """A new webhook key, announced in the stream; the old one works for `grace_seconds` (0:
    revoked at once, for a leaked key), and every earlier one until its own time (see
    `_rotate`)."""
    rotated = await _replace_key(
        session,
        env,
        "webhook",
        new_webhook_key(),
        grace_seconds=grace_seconds,
        end_previous_keys_early=end_previous_keys_early,
    )
    await emit(session, env, WEBHOOK_KEY_ROTATED, grace_seconds=grace_seconds)
    return rotated


async def rotate_source_write_key(
    session: AsyncSession,
    env: Environment,
    *,
    grace_seconds: int,
    end_previous_keys_early: bool = False,
) -> environments.Rotated:
    """A new intake write key (the /v1 intake's), announced in the stream; the old one keeps
    working for `grace_seconds` (0: revoked at once), and every earlier one until its own
    time."""
    rotated = await _replace_key(
        session,
        env,
        "source_write",
        new_source_write_key(),
        grace_seconds=grace_seconds,
        end_previous_keys_early=end_previous_keys_early,
    )
    await emit(session, env, SOURCE_WRITE_KEY_ROTATED, grace_seconds=grace_seconds)
    return rotated


async def ensure_source_write_key(session: AsyncSession, env: Environment) -> str | None:
    """An intake write key for an environment made before the intake existed (None if it has
    one): `make run` gives one to each such environment and shows it. Not announced: no key
    was replaced."""
    if env.source_write_key_hash is not None:
        return None
    replaced = await _replace_key(
        session, env, "source_write", new_source_write_key(), grace_seconds=0
    )
    return replaced.key


async def _replace_key(
    session: AsyncSession,
    env: Environment,
    kind: Literal["webhook", "source_write"],
    key: str,
    *,
    grace_seconds: int,
    end_previous_keys_early: bool = False,
) -> environments.Rotated:
    """`key` in place of the environment's `kind` key (its `{kind}_key_hash` and `_hint`
    columns), the old one kept for its grace (see `_rotate`)."""
    await _lock(session, env)
    hash_column, hint_column = f"{kind}_key_hash", f"{kind}_key_hint"
    old = (getattr(env, hash_column), getattr(env, hint_column))
    until = await _rotate(
        session,
        env,
        kind,
        old,
        grace_seconds=grace_seconds,
        end_previous_keys_early=end_previous_keys_early,
    )
    setattr(env, hash_column, hash_key(key))
    setattr(env, hint_column, key[-4:])
    await session.flush()
    return environments.Rotated(key, until)
