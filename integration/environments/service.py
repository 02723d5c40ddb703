"""Environments: creating, reading, describing and deleting them, and the checks every setting
passes. Changing settings and rotating keys is not here but in outbound.events, the one door
for changes, which announces each in the environment's own stream (this layer cannot publish).
Services add and flush; the caller commits."""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from integration.crypto import (
    SecretBox,
    hash_key,
    mask,
    new_source_write_key,
    new_webhook_key,
)
from integration.environments import origins
from integration.environments.api_url import NotAllowed, normalise, origin
from integration.environments.identity import DEFAULT_BLOCKED_IDS
from integration.environments.repository import KeyMatch
from integration.environments.schemas import NAME_PATTERN, EnvironmentOut, LiveKeyOut
from integration.errors import BadRequest, Conflict, NotFound
from integration.store.models import Environment, Event, OutboxMessage, PreviousKey, User

NAME = re.compile(NAME_PATTERN)
PROPERTY_PATTERN = re.compile(r"[^\s\x00]{1,255}")


@dataclass(frozen=True, slots=True)
class Created:
    environment: Environment
    webhook_key: str
    source_write_key: str


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise BadRequest(
            "name must be 1-64 characters of a-z, 0-9, '-' or '_', starting with a letter or digit",
            error="invalid_field",
            field="name",
        )
    return name


async def create(session: AsyncSession, name: str) -> Created:
    _check_name(name)
    if await session.scalar(select(Environment.id).where(Environment.name == name)):
        raise Conflict(f"an environment named {name!r} already exists", error="name_taken")
    key, source_key = new_webhook_key(), new_source_write_key()
    env = Environment(
        id=uuid.uuid4(),
        name=name,
        webhook_key_hash=hash_key(key),
        webhook_key_hint=key[-4:],
        source_write_key_hash=hash_key(source_key),
        source_write_key_hint=source_key[-4:],
    )
    session.add(env)
    await session.flush()
    await session.refresh(env)
    return Created(env, key, source_key)


async def get(session: AsyncSession, env_id: uuid.UUID | str) -> Environment:
    try:
        key = env_id if isinstance(env_id, uuid.UUID) else uuid.UUID(str(env_id))
    except ValueError:
        raise NotFound("no such environment") from None
    env = await session.get(Environment, key)
    if env is None:
        raise NotFound("no such environment")
    return env


async def by_name(session: AsyncSession, name: str) -> Environment:
    env = await session.scalar(select(Environment).where(Environment.name == name))
    if env is None:
        raise NotFound(f"no environment named {name!r}")
    return env


async def list_all(session: AsyncSession) -> list[Environment]:
    return list(await session.scalars(select(Environment).order_by(Environment.created_at)))


KEY_NAMES = {"webhook": "webhook key", "source_write": "intake write key"}


@dataclass(frozen=True, slots=True)
class Rotated:
    key: str  # the new key, whole: shown once
    replaced_until: datetime | None  # when the key it replaced stops working (None: now)


@dataclass(frozen=True, slots=True)
class Promised:
    key_hint: str
    expires_at: datetime


class KeysWouldEndEarly(Conflict):
    """A rotation would end rotated-out keys before the time each was promised: refused
    unless the caller says so (`end_previous_keys_early`). `keys` are those keys."""

    def __init__(
        self, kind: str, keys: Sequence[PreviousKey], ends: datetime, grace_seconds: int
    ) -> None:
        latest = max(k.expires_at for k in keys)
        needed = math.ceil((latest - datetime.now(UTC)).total_seconds())
        listed = "; ".join(
            f"…{k.key_hint} until {k.expires_at.isoformat(timespec='seconds')}" for k in keys
        )
        super().__init__(
            f"a grace of {grace_seconds} s would end {len(keys)} earlier {KEY_NAMES[kind]}"
            f"{'s' if len(keys) > 1 else ''} sooner than promised ({listed}). Rotate with"
            f" grace_seconds of at least {needed} to keep every promise, or add"
            ' "end_previous_keys_early": true to end '
            + ("them" if len(keys) > 1 else "it")
            + (" now" if grace_seconds == 0 else f" at {ends.isoformat(timespec='seconds')}"),
            error="previous_keys_would_end_early",
            keys=[
                {"hint": "…" + k.key_hint, "valid_until": k.expires_at.isoformat()} for k in keys
            ],
        )
        self.kind = kind
        # Plain values: the rows expire with the transaction the refusal rolls back.
        self.keys = [Promised(k.key_hint, k.expires_at) for k in keys]
        self.ends = ends
        self.needed_seconds = needed


async def previous_keys(
    session: AsyncSession, env_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[PreviousKey]]:
    """The rotated-out keys still working, per environment, the longest-promised first."""
    rows = await session.scalars(
        select(PreviousKey)
        .where(PreviousKey.environment_id.in_(env_ids), PreviousKey.expires_at > func.now())
        .order_by(PreviousKey.expires_at.desc())
    )
    found: dict[uuid.UUID, list[PreviousKey]] = {i: [] for i in env_ids}
    for row in rows:
        found[row.environment_id].append(row)
    return found


def check_api_url(value: str, allowlist: frozenset[str] = frozenset()) -> str:
    try:
        return normalise(value if isinstance(value, str) else "", allowlist)
    except NotAllowed as exc:
        raise BadRequest(
            f"segment_api_url {exc}", error="invalid_field", field="segment_api_url"
        ) from None


def check_write_key_follows(
    env: Environment, changes: dict[str, Any], allowlist: frozenset[str]
) -> None:
    """The write key goes wherever segment_api_url points. Moving it to another host without
    giving the key again would let anyone who can change settings collect a key they were
    only ever shown masked: so a new host needs the key in the same change (or clears it)."""
    if "segment_api_url" not in changes or "segment_write_key" in changes:
        return
    if not env.segment_write_key:
        return
    new = check_api_url(changes["segment_api_url"], allowlist)
    if origin(new) != origin(env.segment_api_url):
        raise BadRequest(
            "segment_api_url names a new host: give segment_write_key again in the same change"
            " (or clear it), so the stored key is never sent to a host it was not set for",
            error="write_key_required",
            field="segment_write_key",
        )


MAX_RETENTION_DAYS = 36_500


def check_retention(value: Any) -> int | None:
    """Days to keep events, or None: keep them forever."""
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not 1 <= value <= MAX_RETENTION_DAYS
    ):
        raise BadRequest(
            f"retention_days must be a whole number of days from 1 to {MAX_RETENTION_DAYS},"
            " or null to keep events forever",
            error="invalid_field",
            field="retention_days",
        )
    return value


def check_company_property(value: str) -> str:
    if not isinstance(value, str) or not PROPERTY_PATTERN.fullmatch(value):
        raise BadRequest(
            "company_property must be 1-255 characters without spaces",
            error="invalid_field",
            field="company_property",
        )
    return value


def check_origins(value: list[str]) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest(
            "cors_allowed_origins must be a list of origins",
            error="invalid_field",
            field="cors_allowed_origins",
        )
    try:
        return origins.normalise_all(value)
    except origins.NotAnOrigin as exc:
        raise BadRequest(
            f"cors_allowed_origins: each origin {exc} (e.g. https://app.example.com)",
            error="invalid_field",
            field="cors_allowed_origins",
        ) from None


def check_flag(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise BadRequest(f"{field} must be true or false", error="invalid_field", field=field)
    return value


def check_secret(field: str, value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if (
        not isinstance(value, str)
        or "\x00" in value
        or len(value) < 8
        or len(value) > 512
        or value.strip() != value
    ):
        raise BadRequest(
            f"{field} must be 8-512 characters without surrounding spaces",
            error="invalid_field",
            field=field,
        )
    return value


def write_key(env: Environment, box: SecretBox) -> str | None:
    return box.decrypt(env.segment_write_key) if env.segment_write_key else None


def signing_secret(env: Environment | KeyMatch, box: SecretBox) -> str | None:
    return box.decrypt(env.webhook_signing_secret) if env.webhook_signing_secret else None


def _live_keys(previous: Sequence[PreviousKey], kind: str) -> list[LiveKeyOut]:
    return [
        LiveKeyOut(hint="…" + k.key_hint, valid_until=k.expires_at)
        for k in previous
        if k.kind == kind
    ]


def describe(
    env: Environment, box: SecretBox, *, previous: Sequence[PreviousKey]
) -> EnvironmentOut:
    """The public view of an environment: secrets masked, never whole. `previous`: its live
    rotated-out keys (`previous_keys`), listed by their last characters and end times."""
    return EnvironmentOut(
        id=str(env.id),
        name=env.name,
        webhook_key_hint="…" + env.webhook_key_hint,
        source_write_key_hint=(
            "…" + env.source_write_key_hint if env.source_write_key_hint else None
        ),
        previous_webhook_keys=_live_keys(previous, "webhook"),
        previous_source_write_keys=_live_keys(previous, "source_write"),
        stream_enabled=env.stream_enabled,
        store_outbound_events=env.store_outbound_events,
        cors_allowed_origins=list(env.cors_allowed_origins),
        company_property=env.company_property,
        segment_api_url=env.segment_api_url,
        retention_days=env.retention_days,
        blocked_ids=(
            list(env.blocked_ids) if env.blocked_ids is not None else list(DEFAULT_BLOCKED_IDS)
        ),
        blocked_ids_default=env.blocked_ids is None,
        max_anonymous_ids_per_user=env.max_anonymous_ids_per_user,
        allow_identified_merges=env.allow_identified_merges,
        segment_write_key=mask(write_key(env, box)),
        webhook_signing_secret=mask(signing_secret(env, box)),
        created_at=env.created_at,
        updated_at=env.updated_at,
    )


async def delete(session: AsyncSession, env: Environment, *, force: bool) -> None:
    """Delete an environment with everything it holds; refused while it holds data, unless
    `force`, so that a mistyped id does not wipe a production environment."""
    if not force:
        for model in (User, Event, OutboxMessage):
            if await session.scalar(select(exists().where(model.environment_id == env.id))):
                raise Conflict(
                    "the environment holds data; add ?force=true to delete it with all its data",
                    error="environment_not_empty",
                )
    await session.delete(env)
