"""Authenticating a request by the key it carries: one authenticator for both kinds of key a
door takes, the webhook key in the webhook's URL and the source write key of the /v1 intake.

The key's digest is looked up first, in the process's key cache, else the database under the
request's deadline: a working key passes whatever else came from its address, so someone else's
failures from a shared address never refuse it. A missing or unknown key is a failure, counted
against the caller's address (`throttle.KeyGate`); past the address's budget it gets 429, else
401. An unknown key costs one indexed lookup and nothing more.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from integration.crypto import hash_key
from integration.deadline import within
from integration.environments.key_cache import KeyCache, M
from integration.environments.repository import (
    KeyMatch,
    SourceMatch,
    find_by_source_write_key,
    find_by_webhook_key,
)
from integration.errors import TooManyRequests, Unauthorized
from integration.store.db import driver_connection
from integration.throttle import KeyGate


@dataclass(frozen=True, slots=True)
class KeyKind(Generic[M]):
    """What differs between the kinds of key: where one is found, and how a refusal reads."""

    name: str  # the key cache's label in metrics
    find: Callable[[asyncpg.Connection, str], Awaitable[M | None]]
    unknown: tuple[str, str]  # (error, detail) for a key that opens nothing
    missing: tuple[str, str]  # ... for a request that carries none
    throttled: str  # the detail past the address's budget


WEBHOOK_KEY: KeyKind[KeyMatch] = KeyKind(
    "webhook",
    find_by_webhook_key,
    unknown=("unknown_webhook_key", "unknown webhook key"),
    missing=("unknown_webhook_key", "unknown webhook key"),
    throttled="too many requests with unknown webhook keys from this address; retry later",
)
WRITE_KEY: KeyKind[SourceMatch] = KeyKind(
    "source",
    find_by_source_write_key,
    unknown=("invalid_write_key", "Invalid write key"),
    missing=(
        "missing_write_key",
        "no write key: send it as the HTTP Basic user name (empty password), or as writeKey"
        " in the body",
    ),
    throttled="too many requests without a valid write key from this address; retry later",
)


class KeyAuthenticator(Generic[M]):
    """A door's authenticator for one kind of key, made once per process."""

    def __init__(
        self,
        engine: AsyncEngine,
        kind: KeyKind[M],
        failures_per_minute: int,
        cache: KeyCache[M] | None = None,
    ) -> None:
        self._engine = engine
        self._kind = kind
        # Without a cache of the app's (whose listener forgets changes), always the database.
        self._cache = cache or KeyCache(kind.name, ttl=0)
        self._gate = KeyGate(failures_per_minute)

    async def authenticate(self, key: Any, client: str, deadline: float) -> M:
        """The environment `key` opens (module docstring). `key` is whatever the request
        carried: anything but a non-empty string is a missing key."""
        given = isinstance(key, str) and bool(key)
        match = await self._lookup(key, deadline) if given else None
        if match is not None:
            return match
        self.failed(client)
        error, detail = self._kind.unknown if given else self._kind.missing
        raise Unauthorized(detail, error=error)

    def failed(self, client: str) -> None:
        """Count a failed authentication; past the address's budget, refuse it with 429."""
        if wait := self._gate.failure(client):
            raise TooManyRequests(self._kind.throttled, error="too_many_failures", retry_after=wait)

    def unknown(self) -> Unauthorized:
        """The refusal of a key that opens nothing (any more: its environment was deleted)."""
        error, detail = self._kind.unknown
        return Unauthorized(detail, error=error)

    async def _lookup(self, key: str, deadline: float) -> M | None:
        digest = hash_key(key)
        return self._cache.get(digest) or await within(deadline, self._find(digest))

    async def _find(self, digest: str) -> M | None:
        since = self._cache.since()
        async with driver_connection(self._engine) as pg:
            match = await self._kind.find(pg, digest)
        if match is not None:
            self._cache.remember(digest, match, since)
        return match
