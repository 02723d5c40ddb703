"""Failed-authentication throttle per client: a token bucket of failures, in memory.

Each client (its address) may fail a few times in a burst and then about `per_minute` times a
minute; past that it is told to come back later (429 with Retry-After) without any lookup. The
table holds at most `max_clients` entries, oldest dropped first, so a flood from many
addresses costs bounded memory.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class FailureThrottle:
    def __init__(
        self,
        per_minute: float,
        *,
        burst: int | None = None,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rate = per_minute / 60.0
        self._burst = float(burst if burst is not None else max(1, int(per_minute)))
        self._max = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def retry_after(self, client: str) -> float | None:
        """Seconds until `client` may try again, or None if it may try now."""
        bucket = self._buckets.get(client)
        if bucket is None:
            return None
        self._refill(bucket)
        if bucket.tokens >= 1:
            return None
        return (1 - bucket.tokens) / self._rate if self._rate else 60.0

    def failed(self, client: str) -> None:
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = self._buckets[client] = _Bucket(self._burst, self._clock())
            if len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(client)
            self._refill(bucket)
        bucket.tokens = max(0.0, bucket.tokens - 1)

    def _refill(self, bucket: _Bucket) -> None:
        now = self._clock()
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.at) * self._rate)
        bucket.at = now
