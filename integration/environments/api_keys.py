"""API keys: per-environment credentials for the admin API, limited by scope.

The admin token is the superuser. An API key belongs to one environment and carries scopes:
`publish` (product events) and `read` (its users, companies, events, stats, deliveries). Which
scope a route needs is declared next to the route (`@operation(scope=...)`); admin/auth.py
checks it. A key is a 256-bit random token with a recognisable prefix; only its SHA-256 is
stored and it is found by that digest, as webhook keys are: an index lookup that reveals
nothing of the key through timing. It is shown once, at creation; afterwards its last four
characters. Revoking deletes the row, so the next request with it fails.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from pydantic import ValidationError
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from integration.crypto import hash_key, new_webhook_key
from integration.environments.schemas import ApiKeyCreate, ApiKeyOut, ApiKeyWithSecret
from integration.errors import BadRequest, Conflict, NotFound
from integration.store.models import ApiKey, Environment

PREFIX = "sik_"  # "segment integration key": tells a key from the admin token at a glance
MAX_KEY_CHARS = 128


@dataclass(frozen=True, slots=True)
class Grant:
    """What a presented key may do: the environment it belongs to and its scopes."""

    key_id: uuid.UUID
    environment_id: uuid.UUID
    scopes: frozenset[str]

    def allows(self, scope: str | None, env_id: str | None) -> bool:
        """A route needing `scope` in environment `env_id` (None: admin token only)."""
        return scope is not None and scope in self.scopes and env_id == str(self.environment_id)


def describe(key: ApiKey) -> ApiKeyOut:
    return ApiKeyOut(
        id=str(key.id),
        environment_id=str(key.environment_id),
        name=key.name,
        scopes=sorted(key.scopes),
        key_hint="…" + key.key_hint,
        created_at=key.created_at,
    )


def check(name: str, scopes: list[str]) -> ApiKeyCreate:
    """The admin API's body rules, for the CLI as well."""
    try:
        return ApiKeyCreate.model_validate({"name": name, "scopes": sorted(set(scopes))})
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = str(first["loc"][0]) if first["loc"] else "body"
        raise BadRequest(f"{field}: {first['msg']}", error="invalid_field", field=field) from None


async def create(session: AsyncSession, env: Environment, asked: ApiKeyCreate) -> ApiKeyWithSecret:
    """A new key for `env`; the answer holds the key itself, which is never shown again."""
    taken = select(ApiKey.id).where(ApiKey.environment_id == env.id, ApiKey.name == asked.name)
    if await session.scalar(taken):
        raise Conflict(
            f"{env.name} already has an API key named {asked.name!r}", error="name_taken"
        )
    key = PREFIX + new_webhook_key()
    row = ApiKey(
        id=uuid.uuid4(),
        environment_id=env.id,
        name=asked.name,
        key_hash=hash_key(key),
        key_hint=key[-4:],
        scopes=sorted(set(asked.scopes)),
    )
    session.add(row)
    await session.flush()
    await session.refresh(row)
    return ApiKeyWithSecret(**describe(row).model_dump(), key=key)


async def list_for(session: AsyncSession, env: Environment) -> list[ApiKey]:
    stmt = select(ApiKey).where(ApiKey.environment_id == env.id).order_by(ApiKey.created_at)
    return list(await session.scalars(stmt))


async def revoke(session: AsyncSession, env: Environment, key: str) -> ApiKey:
    """Delete one of `env`'s keys, named by id or name; it stops working with the commit."""
    try:
        match = ApiKey.id == uuid.UUID(key)
    except ValueError:
        match = ApiKey.name == key
    found: ApiKey | None = await session.scalar(
        delete(ApiKey).where(ApiKey.environment_id == env.id, match).returning(ApiKey)
    )
    if found is None:
        raise NotFound(f"{env.name} has no API key {key!r}")
    return found


async def authenticate(session: AsyncSession, token: str) -> Grant | None:
    """The grant of a presented key, or None. Only tokens that look like ours are looked up."""
    if not token.startswith(PREFIX) or len(token) > MAX_KEY_CHARS or not token.isascii():
        return None
    row = (
        await session.execute(
            select(ApiKey.id, ApiKey.environment_id, ApiKey.scopes).where(
                ApiKey.key_hash == hash_key(token)
            )
        )
    ).first()
    return Grant(row.id, row.environment_id, frozenset(row.scopes)) if row else None
