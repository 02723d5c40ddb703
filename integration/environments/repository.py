"""Reading environments on the webhook's hot path, with the driver's own connection."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

from integration.crypto import hash_key


@dataclass(frozen=True, slots=True)
class KeyMatch:
    """What the webhook needs of the environment a key belongs to."""

    id: uuid.UUID
    company_property: str
    webhook_signing_secret: str | None  # encrypted


# Current keys, and a rotated-out key until its grace period ends. Both columns are indexed.
FIND_BY_WEBHOOK_KEY = """
SELECT id, company_property, webhook_signing_secret
FROM environments
WHERE webhook_key_hash = $1
   OR (previous_webhook_key_hash = $1 AND previous_webhook_key_expires_at > now())
LIMIT 1
"""


def webhook_key_digest(key: str) -> str:
    return hash_key(key)


async def find_by_webhook_key(pg: asyncpg.Connection, digest: str) -> KeyMatch | None:
    """The environment a webhook key (by its SHA-256 digest) opens, if any. Looked up by
    digest: an index lookup that reveals nothing of the key through timing."""
    row = await pg.fetchrow(FIND_BY_WEBHOOK_KEY, digest)
    if row is None:
        return None
    return KeyMatch(row["id"], row["company_property"], row["webhook_signing_secret"])
