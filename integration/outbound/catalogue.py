"""Product events the platform itself emits into an environment's own stream.

They follow Segment's object-action naming and go through the same outbox as the host
product's events, so with the stream off they are not sent. `anonymousId` is
`environment-{id}`: these describe the environment, not a person.

- Segment Stream Enabled: the stream switch is turned on. Properties: environment.
- Segment Write Key Changed: a new write key is set while streaming. Properties: environment.
- Webhook Key Rotated: the webhook key is rotated while streaming.
  Properties: environment, grace_seconds.
- Segment Connection Tested: `env test` or test-connection; sent directly, not through the outbox.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from integration.store.models import Environment

STREAM_ENABLED = "Segment Stream Enabled"
WRITE_KEY_CHANGED = "Segment Write Key Changed"
WEBHOOK_KEY_ROTATED = "Webhook Key Rotated"
CONNECTION_TESTED = "Segment Connection Tested"


def platform_event(env: Environment, event: str, **properties: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "anonymousId": f"environment-{env.id}",
        "event": event,
        "properties": {"environment": env.name, **properties},
    }


async def emit(session: AsyncSession, env: Environment, event: str, **properties: Any) -> None:
    from integration.outbound.publish import publish

    await publish(session, env, platform_event(env, event, **properties))


async def after_settings_change(
    session: AsyncSession, env: Environment, changed: list[str]
) -> None:
    if "stream_enabled" in changed and env.stream_enabled:
        await emit(session, env, STREAM_ENABLED)
    elif "segment_write_key" in changed and env.stream_enabled and env.segment_write_key:
        await emit(session, env, WRITE_KEY_CHANGED)
