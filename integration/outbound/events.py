"""Product events the platform itself emits into an environment's own stream, and the
changes that cause them (settings, key rotation), which the admin API and the CLI apply here.

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

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from integration.config import Settings
from integration.crypto import SecretBox
from integration.environments import service as environments
from integration.outbound.publish import publish
from integration.store.models import Environment

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
    """Validate and apply settings (environments.service.update), then say so in the
    environment's own stream. The admin API and the CLI both change settings through here."""
    changed = await environments.update(session, env, box, changes, allowlist=allowlist)
    if "stream_enabled" in changed and env.stream_enabled:
        await emit(session, env, STREAM_ENABLED)
    elif "segment_write_key" in changed and env.stream_enabled and env.segment_write_key:
        await emit(session, env, WRITE_KEY_CHANGED)
    return changed


async def change_settings_by_name(
    session: AsyncSession, settings: Settings, name: str, changes: dict[str, Any]
) -> list[str]:
    """`change_settings` for the CLI, which names the environment."""
    settings.require("secret_key")
    env = await environments.by_name(session, name)
    return await change_settings(
        session, env, SecretBox.of(settings), changes, allowlist=settings.segment_api_hosts
    )


async def rotate_webhook_key(
    session: AsyncSession,
    env: Environment,
    *,
    grace_seconds: int,
    end_previous_keys_early: bool = False,
) -> environments.Rotated:
    """A new webhook key (the old one works for `grace_seconds`), announced in the stream."""
    rotated = await environments.rotate_webhook_key(
        session, env, grace_seconds=grace_seconds, end_previous_keys_early=end_previous_keys_early
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
    """A new intake write key for the /v1 intake (the old one works for `grace_seconds`),
    announced in the stream."""
    rotated = await environments.rotate_source_write_key(
        session, env, grace_seconds=grace_seconds, end_previous_keys_early=end_previous_keys_early
    )
    await emit(session, env, SOURCE_WRITE_KEY_ROTATED, grace_seconds=grace_seconds)
    return rotated


async def rotate_source_write_key_by_name(
    session: AsyncSession,
    settings: Settings,
    name: str,
    grace_seconds: int | None,
    *,
    end_previous_keys_early: bool = False,
) -> tuple[Environment, environments.Rotated]:
    """`rotate_source_write_key` for the CLI, which names the environment (and may leave the
    grace period to SOURCE_WRITE_KEY_GRACE_SECONDS)."""
    env = await environments.by_name(session, name)
    grace = settings.source_write_key_grace_seconds if grace_seconds is None else grace_seconds
    rotated = await rotate_source_write_key(
        session, env, grace_seconds=grace, end_previous_keys_early=end_previous_keys_early
    )
    return env, rotated
