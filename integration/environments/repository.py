"""Reading environments where speed or a narrow view matters: the webhook's and the intake's
key lookups (on the driver's own connection, whenever a process's key cache cannot answer),
the intake's CORS preflight lookup, and the worker's delivery target."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from integration.environments.identity import DEFAULT_RULES, IdentityRules


@dataclass(frozen=True, slots=True)
class KeyMatch:
    """What the webhook needs of the environment a key belongs to."""

    id: uuid.UUID
    company_property: str
    webhook_signing_secret: str | None  # encrypted
    valid_until: datetime | None = None  # when the key is a rotated-out one: its grace's end
    identity: IdentityRules = DEFAULT_RULES


# The current key, or any rotated-out key until its own grace period ends: each by its unique
# index (environments.webhook_key_hash, previous_keys' primary key).
FIND_BY_WEBHOOK_KEY = """
SELECT id, company_property, webhook_signing_secret, NULL::timestamptz AS valid_until,
       blocked_ids, max_anonymous_ids_per_user, allow_identified_merges
FROM environments WHERE webhook_key_hash = $1
UNION ALL
SELECT e.id, e.company_property, e.webhook_signing_secret, p.expires_at,
       e.blocked_ids, e.max_anonymous_ids_per_user, e.allow_identified_merges
FROM previous_keys p JOIN environments e ON e.id = p.environment_id
WHERE p.key_hash = $1 AND p.kind = 'webhook' AND p.expires_at > now()
LIMIT 1
"""


async def find_by_webhook_key(pg: asyncpg.Connection, digest: str) -> KeyMatch | None:
    """The environment a webhook key (by its SHA-256 digest) opens, if any. Looked up by
    digest: an index lookup that reveals nothing of the key through timing."""
    row = await pg.fetchrow(FIND_BY_WEBHOOK_KEY, digest)
    if row is None:
        return None
    rules = IdentityRules.of(
        row["blocked_ids"], row["max_anonymous_ids_per_user"], row["allow_identified_merges"]
    )
    return KeyMatch(
        row["id"],
        row["company_property"],
        row["webhook_signing_secret"],
        row["valid_until"],
        rules,
    )


@dataclass(frozen=True, slots=True)
class SourceMatch:
    """What the /v1 intake needs of the environment a source write key belongs to."""

    id: uuid.UUID
    cors_allowed_origins: list[str]
    valid_until: datetime | None = None  # when the key is a rotated-out one: its grace's end


# As FIND_BY_WEBHOOK_KEY, for the /v1 intake's source write keys.
FIND_BY_SOURCE_WRITE_KEY = """
SELECT id, cors_allowed_origins, NULL::timestamptz AS valid_until
FROM environments WHERE source_write_key_hash = $1
UNION ALL
SELECT e.id, e.cors_allowed_origins, p.expires_at
FROM previous_keys p JOIN environments e ON e.id = p.environment_id
WHERE p.key_hash = $1 AND p.kind = 'source_write' AND p.expires_at > now()
LIMIT 1
"""


async def find_by_source_write_key(pg: asyncpg.Connection, digest: str) -> SourceMatch | None:
    """The environment a source write key (by its SHA-256 digest) opens, if any."""
    row = await pg.fetchrow(FIND_BY_SOURCE_WRITE_KEY, digest)
    if row is None:
        return None
    return SourceMatch(row["id"], list(row["cors_allowed_origins"]), row["valid_until"])


# By the GIN index on the array: `@>` (contains), not `= ANY`, which the index cannot serve.
ORIGIN_ALLOWED = """
SELECT EXISTS (SELECT 1 FROM environments WHERE cors_allowed_origins @> ARRAY[$1::text])
"""


async def origin_allowed_somewhere(pg: asyncpg.Connection, origin: str) -> bool:
    """Whether any environment allows this (normalised) browser origin. A CORS preflight
    carries no key, so this is all it can be answered by; the request that follows is
    checked against its own environment's origins."""
    return bool(await pg.fetchval(ORIGIN_ALLOWED, origin))


@dataclass(frozen=True, slots=True)
class Publishing:
    """What publishing into an environment's outbox reads of it, in the publishing transaction
    (the intake's hot path: four columns, not the whole row through the ORM)."""

    id: uuid.UUID
    stream_enabled: bool
    store_outbound_events: bool
    company_property: str


PUBLISHING = text("""
SELECT id, stream_enabled, store_outbound_events, company_property FROM environments
WHERE id = CAST(:env AS uuid)
""")


async def publishing(session: AsyncSession, env_id: uuid.UUID) -> Publishing | None:
    row = (await session.execute(PUBLISHING, {"env": str(env_id)})).first()
    if row is None:
        return None
    return Publishing(row.id, row.stream_enabled, row.store_outbound_events, row.company_property)


@dataclass(frozen=True, slots=True)
class DeliveryTarget:
    """Where an environment's outbound events go while its stream is on."""

    api_url: str
    write_key: str  # encrypted


DELIVERY_TARGET = text("""
SELECT segment_write_key, segment_api_url FROM environments
WHERE id = CAST(:env AS uuid) AND stream_enabled AND segment_write_key IS NOT NULL
""")


async def delivery_target(session: AsyncSession, env_id: uuid.UUID) -> DeliveryTarget | None:
    """The environment's Segment URL and (encrypted) write key, or None while its stream is
    off or it has no write key."""
    row = (await session.execute(DELIVERY_TARGET, {"env": str(env_id)})).first()
    return DeliveryTarget(row.segment_api_url, row.segment_write_key) if row else None
