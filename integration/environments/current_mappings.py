"""Each environment's current mapping per direction, as the pipeline applies it: compiled once
per version in each process, never per message.

An API process remembers what it found (a definition, or that there is none) while its
environments listener hears every change (key_cache.ChangeListener): a new version is announced
after its commit like an environment change (store/db.py, `announce_on_commit`) and the
listener's fingerprint counts the `mappings` rows each second, so a change is in force in every
process within 2 s. A process without a listener (a worker, the command line) reads the current
version from Postgres for each batch, and still compiles each version once.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import asyncpg
import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from integration.environments.mappings import Definition, Mapped, compile_definition
from integration.errors import Unprocessable
from integration.spec import DELETE
from integration.store.db import SessionMaker
from integration.store.models import MappingVersion

_Key = tuple[uuid.UUID, str]


@dataclass(frozen=True)
class Current:
    """An environment's current version for one direction, compiled; or, for a stored version
    that no longer compiles (the rules grew stricter since), why not: every message (but a
    GDPR `delete`, never mapped) then goes on unmapped with that reason."""

    version: int
    definition: Definition | None
    broken: str | None = None

    def apply(self, message: dict[str, Any], *, now: datetime) -> Mapped:
        if self.definition is not None:
            return self.definition.apply(message, now=now)
        if message.get("type") == DELETE:
            return Mapped(message, matched=False)
        return Mapped(message, matched=True, error=f"version {self.version}: {self.broken}")


class CurrentMappings:
    """(environment, direction) -> Current, or None for no mapping."""

    def __init__(self) -> None:
        self._entries: dict[_Key, Current | None] = {}
        self._compiled: dict[_Key, Current] = {}  # kept across changes: compiled once per version
        self._generation = 0
        self.trusted = False  # set by the listener while it hears every change

    def forget_all(self) -> None:
        self._generation += 1
        self._entries.clear()

    async def get(self, env_id: uuid.UUID, direction: str, latest: Latest) -> Current | None:
        """The current version; `latest` reads it from Postgres when this process does not
        know it (`in_session`, or `on_connection` on the webhook's hot path)."""
        key = (env_id, direction)
        if self.trusted and key in self._entries:
            return self._entries[key]
        since = self._generation
        row = await latest(env_id, direction)
        current = None if row is None else self._compile(key, *row)
        # A definition read before a change is not kept after it.
        if self.trusted and since == self._generation:
            self._entries[key] = current
        return current

    def _compile(
        self, key: _Key, version: int, trigger: str | None, mapping: dict[str, Any]
    ) -> Current:
        known = self._compiled.get(key)
        if known is not None and known.version == version:
            return known
        try:
            current = Current(version, compile_definition(trigger, mapping, key[1]))
        except Unprocessable as refused:
            current = Current(version, None, refused.detail)
        self._compiled[key] = current
        return current


# A mapping's current version: (version, trigger, mapping), or None for no mapping.
Row = tuple[int, str | None, dict[str, Any]]
Latest = Callable[[uuid.UUID, str], Awaitable[Row | None]]

LATEST = (
    "SELECT version, trigger, mapping::text FROM mappings"
    " WHERE environment_id = $1 AND direction = $2 ORDER BY version DESC LIMIT 1"
)


def on_connection(pg: asyncpg.Connection) -> Latest:
    async def latest(env_id: uuid.UUID, direction: str) -> Row | None:
        found = await pg.fetchrow(LATEST, env_id, direction)
        return None if found is None else (found[0], found[1], orjson.loads(found[2]))

    return latest


def in_session(session: AsyncSession) -> Latest:
    async def latest(env_id: uuid.UUID, direction: str) -> Row | None:
        found = (
            await session.execute(
                select(MappingVersion.version, MappingVersion.trigger, MappingVersion.mapping)
                .where(MappingVersion.environment_id == env_id)
                .where(MappingVersion.direction == direction)
                .order_by(MappingVersion.version.desc())
                .limit(1)
            )
        ).first()
        return None if found is None else (found.version, found.trigger, found.mapping)

    return latest


# The sessions of a process that maps (an API process) carry its cache; any other session
# (a worker's, the command line's) reads through this one, which is never trusted.
_SESSION_KEY: Final = "current_mappings"
_UNHEARD = CurrentMappings()


def serve(sessions: SessionMaker, mappings: CurrentMappings) -> None:
    """Sessions from `sessions` map outbound messages with `mappings`."""
    sessions.configure(info={**sessions.kw.get("info", {}), _SESSION_KEY: mappings})


def of(session: AsyncSession) -> CurrentMappings:
    found: CurrentMappings = session.info.get(_SESSION_KEY, _UNHEARD)
    return found
