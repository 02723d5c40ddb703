"""Failed-authentication throttle per client: a token bucket that only failures drain, in
memory, per process. The admin API, the console's sign-in, the webhook and the /v1 intake use
it the same way: the credential is checked first (a constant-time comparison or a hash lookup,
both cheap), a valid one always passes, and only a failure is counted; past its budget a
client's failures are answered 429 with Retry-After instead of 401."""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from functools import lru_cache

from starlette.types import Scope

# Clients with failures to remember; past this the least recently failing are forgotten,
# which only ever gives a client a fresh (full) bucket back: memory stays bounded.
MAX_CLIENTS = 10_000


def client_key(scope: Scope) -> str:
    """The client's address; an IPv6 client by its /64, which one host usually holds whole."""
    client = scope.get("client")
    return _address_key(client[0] if client else "unknown")


@lru_cache(maxsize=4096)  # parsing an address was 4% of a webhook request's time
def _address_key(host: str) -> str:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return str(host)
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class FailureThrottle:
    """A token bucket per client that only failed authentications drain: `burst` failures at
    once, then one more every `refill_seconds`. A valid credential is never refused: every
    credential here is too long to guess (the admin token has 32 characters or more, keys 190
    bits or more), so the throttle is there to tell a misconfigured or hostile client to back
    off and to keep the failure log short, not to lock anyone out."""

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

    def failure(self, client: str) -> int:
        """Count a failed attempt from `client` and return 0; or, when it is over its budget,
        return the whole seconds it must wait (the attempt is refused, not counted)."""
        if wait := self.retry_after(client):
            return wait
        self.failed(client)
        return 0

    def __len__(self) -> int:
        return len(self._buckets)


class KeyGate(FailureThrottle):
    """The throttle of the doors whose keys come with each request (webhook keys, source write
    keys), as failures per minute. The key is looked up first and a working one always
    passes; only failures are counted and, past the budget, answered 429. Segment's egress
    addresses, and an office's NAT, are shared by many senders: one of them guessing must not
    lock out the others."""

    def __init__(self, failures_per_minute: int) -> None:
        super().__init__(failures_per_minute, 60.0 / failures_per_minute)
