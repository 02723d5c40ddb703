"""The tracking plan in force for each environment and direction, compiled, remembered in each
process and forgotten whenever any environment or plan changes.

The intake checks every message against its environment's plan; reading and compiling the plan
per request would cost a query and a compile each time. This cache is emptied by the same
listener as the key caches (integration/environments/key_cache.py): at the commit in the
process that made a change, on the notification sent after it in every other, and by the
fingerprint poll within POLL_SECONDS (1 s) when a notification is lost; and it is trusted only
while that listener listens, so a change is in force in every process within 2 s. Having no plan
is remembered too: most environments have none, and they must not pay a query per message.
"""

from __future__ import annotations

import uuid
from typing import Any, Final

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from integration.plans.check import Plan
from integration.plans.service import compile_version, compiled, current
from integration.store.db import SessionMaker, driver_connection

MAX_ENTRIES = 10_000
IN_FORCE = """
SELECT plan, unplanned_event, unplanned_property FROM tracking_plans
WHERE environment_id = $1 AND direction = $2
ORDER BY version DESC LIMIT 1
"""


class Unknown:
    """Not remembered here: ask `PlanCache.plan`."""


UNKNOWN: Final = Unknown()


class PlanCache:
    """(environment, direction) -> the compiled plan in force, or None for none."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._entries: dict[tuple[uuid.UUID, str], Plan | None] = {}
        self._generation = 0
        self.trusted = False  # set by the listener while it hears every change

    def forget_all(self) -> None:
        self._generation += 1
        self._entries.clear()

    def remembered(self, env_id: uuid.UUID, direction: str) -> Plan | Unknown | None:
        """The plan, when this process remembers it: no task, no await (every webhook request
        asks), else UNKNOWN."""
        return self._entries.get((env_id, direction), UNKNOWN) if self.trusted else UNKNOWN

    async def plan(self, env_id: uuid.UUID, direction: str) -> Plan | None:
        """The plan to check this environment's messages of this direction with, or None."""
        found = self.remembered(env_id, direction)
        if not isinstance(found, Unknown):
            return found
        key = (env_id, direction)
        since = self._generation
        found = await self._load(env_id, direction)
        # A plan read while a change was being announced is not kept after it.
        if self.trusted and since == self._generation:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[key] = found
        return found

    async def _load(self, env_id: uuid.UUID, direction: str) -> Plan | None:
        async with driver_connection(self._engine) as pg:
            row = await pg.fetchrow(IN_FORCE, env_id, direction)
        if row is None:
            return None
        return compile_version(_json(row["plan"]), row[1], row[2], direction)


def _json(value: Any) -> Any:
    """asyncpg hands jsonb over as text unless a codec (SQLAlchemy's) decodes it."""
    return orjson.loads(value) if isinstance(value, str) else value


# The sessions of an API process carry its cache, so that every outbound door (the /v1
# intake, product events, the platform's own events) judges by it; any other session (a
# worker's, the command line's, the product's own) reads the plan in force through itself.
_SESSION_KEY: Final = "plan_cache"


def serve(sessions: SessionMaker, cache: PlanCache) -> None:
    """Sessions from `sessions` find the plans in force in `cache`."""
    sessions.configure(info={**sessions.kw.get("info", {}), _SESSION_KEY: cache})


async def plan_for(session: AsyncSession, env_id: uuid.UUID, direction: str) -> Plan | None:
    """The plan in force for this session's process (its cache, else read now), or None."""
    cache = session.info.get(_SESSION_KEY)
    if isinstance(cache, PlanCache):
        return await cache.plan(env_id, direction)
    row = await current(session, env_id, direction)
    return None if row is None else compiled(row)
