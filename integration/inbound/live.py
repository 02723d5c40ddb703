"""What the console's live view shows besides the stored events: the messages this process
refused (with the reason) and the redeliveries it acknowledged without storing.

Stored messages are read from `events` (every process's, the truth). Refusals and duplicates
are not stored anywhere today, and writing them to Postgres would add a write to exactly the
requests the webhook must keep cheapest: a misconfigured source that sends thousands of bad
messages, or Segment retrying a batch. So they are kept here, in memory: a ring of the last
LIMIT per environment, each message cut to MAX_KEPT_BYTES, for at most MAX_ENVIRONMENTS
environments (the least recently active forgotten). The price: with several API processes
(WEB_CONCURRENCY, or a load balancer) a page shows the refusals of the process that served
it, and a restart forgets them. Nothing here is data; it is a debugging aid.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from integration.config import KIB
from integration.spec import Message

LIMIT = 100
MAX_ENVIRONMENTS = 1000
MAX_KEPT_BYTES = 4 * KIB

DUPLICATE = "duplicate"
REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class Seen:
    """One message this process did not store, and why."""

    at: datetime
    outcome: str  # DUPLICATE or REJECTED
    reason: str
    type: str | None
    name: str | None
    user_id: str | None
    company: str | None
    message_id: str | None
    # The message as received (JSON), or None when it was over MAX_KEPT_BYTES or not an object.
    raw: bytes | None


def _text(item: Any, *names: str) -> str | None:
    if not isinstance(item, dict):
        return None
    for name in names:
        value = item.get(name)
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)[:200]
    return None


def seen(item: Any, outcome: str, reason: str, *, company_property: str | None = None) -> Seen:
    """An entry for `item` (a message as decoded from JSON, or anything else that was sent)."""
    raw = _encoded(item)
    properties = item.get("properties") if isinstance(item, dict) else None
    company = _text(properties, company_property) if company_property else None
    return Seen(
        at=datetime.now(UTC),
        outcome=outcome,
        reason=reason,
        type=_text(item, "type"),
        name=_text(item, "event", "name"),
        user_id=_text(item, "userId", "anonymousId"),
        company=_text(item, "groupId") or company,
        message_id=_text(item, "messageId"),
        raw=raw if raw is not None and len(raw) <= MAX_KEPT_BYTES else None,
    )


def _encoded(item: Any) -> bytes | None:
    """The item as JSON, when it is an object that JSON can hold (a refused message may be
    nested too deeply, or hold integers too large for it)."""
    if not isinstance(item, dict):
        return None
    try:
        return orjson.dumps(item)
    except orjson.JSONEncodeError:
        return None


class LiveLog:
    """Per environment, the last LIMIT refused or duplicate messages; one per API process."""

    def __init__(self, limit: int = LIMIT, max_environments: int = MAX_ENVIRONMENTS) -> None:
        self._limit = limit
        self._max_environments = max_environments
        self._rings: OrderedDict[uuid.UUID, deque[Seen]] = OrderedDict()

    def add(self, env_id: uuid.UUID, entries: list[Seen]) -> None:
        if not entries:
            return
        ring = self._rings.get(env_id)
        if ring is None:
            ring = self._rings[env_id] = deque(maxlen=self._limit)
        self._rings.move_to_end(env_id)
        ring.extend(entries)
        while len(self._rings) > self._max_environments:
            self._rings.popitem(last=False)

    def recent(self, env_id: uuid.UUID) -> list[Seen]:
        """Newest first."""
        return list(reversed(self._rings.get(env_id, ())))


def of_message(message: Message, outcome: str, reason: str) -> Seen:
    """An entry for a valid message (a duplicate): its stored original holds the whole JSON."""
    return Seen(
        at=datetime.now(UTC),
        outcome=outcome,
        reason=reason,
        type=message.type,
        name=message.name,
        user_id=message.user_id or message.anonymous_id,
        company=message.group_id or message.context_group_id,
        message_id=message.message_id,
        raw=None,
    )
