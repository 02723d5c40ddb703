"""Per-minute counts for the delivery chart, remembering the minutes that are over.

Counting an environment's arrivals minute by minute over 24 hours reads every one of them
through the index: half a second at a million a day (bench/console_pages.py). A minute that is
over does not change, so each process keeps, per environment, the counts of the minutes before
SETTLED ago and asks the database only for the ones since. SETTLED is longer than any write
transaction lives (rows carry the time their transaction began, and become visible only when
it commits). An erasure lowers past minutes that this keeps: the chart may show the erased
events until their minutes leave the 24 hours.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

SETTLED = timedelta(minutes=2)
MAX_ENVIRONMENTS = 1000

Fetch = Callable[[AsyncSession, uuid.UUID, datetime], Awaitable[dict[datetime, int]]]


class PerMinute:
    """One per kind of count (arrivals, deliveries) and per process."""

    def __init__(self, fetch: Fetch, max_environments: int = MAX_ENVIRONMENTS) -> None:
        self._fetch = fetch
        self._max = max_environments
        # environment -> (counts cover every minute before this, the counts)
        self._settled: OrderedDict[uuid.UUID, tuple[datetime, dict[datetime, int]]] = OrderedDict()

    async def counts(
        self, session: AsyncSession, env_id: uuid.UUID, start: datetime, now: datetime
    ) -> dict[datetime, int]:
        """Counts per minute from `start` (a whole minute) to now."""
        through, known = self._settled.get(env_id, (start, {}))
        since = max(through, start)
        fresh = await self._fetch(session, env_id, since)
        merged = {minute: n for minute, n in known.items() if minute >= start} | fresh
        settled = now.replace(second=0, microsecond=0) - SETTLED
        self._settled[env_id] = (settled, {m: n for m, n in merged.items() if m < settled})
        self._settled.move_to_end(env_id)
        while len(self._settled) > self._max:
            self._settled.popitem(last=False)
        return merged
