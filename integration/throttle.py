"""Failed-authentication throttle per client: a token bucket that only failures drain, in
memory, per process. The admin API and the webhook share it."""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable

from starlette.types import Scope

# Clients with failures to remember; past this the least recently failing are forgotten,
# which only ever gives a client a fresh (full) bucket back: memory stays bounded.
MAX_CLIENTS = 10_000


def client_key(scope: Scope) -> str:
    """The client's address; an IPv6 client by its /64, which one host usually holds whole."""
    client = scope.get("client")
    host = client[0] if client else "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return str(host)
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class FailureThrottle:
    """A token bucket per client that only failed authentications drain: `burst` failures at
    once, then one more every `refill_seconds`. A client whose bucket is empty is refused
    without its token being looked at, so guessing gains nothing from speed."""

    def __init__(
        self,
        burst: int,
        refill_seconds: float,
        *,
        max_clients: int = MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = burst
        self.refill_seconds = refill_seconds
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, when

    def _tokens(self, client: str, now: float) -> float:
        tokens, when = self._buckets.get(client, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - when) / self.refill_seconds)

    def retry_after(self, client: str) -> int:
        """Whole seconds until this client may try again; 0 when it may now."""
        if client not in self._buckets:
            return 0
        missing = 1.0 - self._tokens(client, self.clock())
        return max(1, math.ceil(missing * self.refill_seconds)) if missing > 0 else 0

    def failed(self, client: str) -> None:
        now = self.clock()
        self._buckets[client] = (self._tokens(client, now) - 1.0, now)
        self._buckets.move_to_end(client)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)
