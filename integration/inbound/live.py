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

An erasure must reach these rings too: they hold ids and whole messages (an email in traits).
The erasing transaction announces the person's ids, as keyed digests, on `users_erased`
(erasure.py); every API process listens (the same connection that hears environment changes)
and drops the entries of that environment naming any of them. The process that erased also
drops them at once.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from integration.config import KIB
from integration.inbound.digests import InstallKey
from integration.spec import Message

LIMIT = 100
MAX_ENVIRONMENTS = 1000
MAX_KEPT_BYTES = 4 * KIB

DUPLICATE = "duplicate"
REJECTED = "rejected"
QUARANTINED = "quarantined"  # held whole by the tracking plan


@dataclass(frozen=True, slots=True)
class Seen:
    """One message this process did not store, and why."""

    at: datetime
    outcome: str  # DUPLICATE, REJECTED or QUARANTINED
    reason: str
    type: str | None
    name: str | None
    user_id: str | None
    company: str | None
    message_id: str | None
    # The message as received (JSON), or None when it was over MAX_KEPT_BYTES or not an object.
    raw: bytes | None
    # The ids it names (userId, anonymousId, previousId), by which an erasure finds it.
    ids: tuple[str, ...] = ()


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
        ids=_ids(item),
    )


_ID_FIELDS = ("userId", "anonymousId", "previousId")


def _ids(item: Any) -> tuple[str, ...]:
    """Every id the item names, as text (numbers as Segment's ids are read: their text)."""
    if not isinstance(item, dict):
        return ()
    found = (item.get(name) for name in _ID_FIELDS)
    return tuple(
        str(v) for v in found if isinstance(v, str | int | float) and not isinstance(v, bool)
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

    def forget(self, env_id: uuid.UUID, ids: Iterable[str]) -> None:
        """Drop this environment's entries that name any of `ids` (an erased person's)."""
        wanted = set(ids)
        if wanted:
            self.forget_where(env_id, lambda seen_ids: not wanted.isdisjoint(seen_ids))

    def forget_where(self, env_id: uuid.UUID, names: Callable[[tuple[str, ...]], bool]) -> None:
        ring = self._rings.get(env_id)
        if ring:
            kept = [s for s in ring if not (s.ids and names(s.ids))]
            ring.clear()
            ring.extend(kept)

    def recent(self, env_id: uuid.UUID) -> list[Seen]:
        """Newest first."""
        return list(reversed(self._rings.get(env_id, ())))


# The channel an erasure announces itself on: "<environment id> <digest> <digest> ...", each
# digest the first DIGEST_CHARS of the keyed HMAC (digests.py) of an id the person was known by.
ERASED_CHANNEL = "users_erased"
DIGEST_CHARS = 32
# Postgres refuses a notification payload of 8000 bytes or more.
MAX_PAYLOAD_BYTES = 7000


def announcements(env_id: uuid.UUID, ids: Iterable[str], key: InstallKey) -> list[str]:
    """The payloads that announce these ids' erasure (several when there are many)."""
    digests = sorted({key.hexdigest(i)[:DIGEST_CHARS] for i in ids})
    per = (MAX_PAYLOAD_BYTES - 40) // (DIGEST_CHARS + 1)
    return [f"{env_id} " + " ".join(digests[i : i + per]) for i in range(0, len(digests), per)]


def on_erased(log: LiveLog, key: InstallKey) -> Callable[[str], None]:
    """The listener's handler for ERASED_CHANNEL: forget the entries naming an erased id."""

    def heard(payload: str) -> None:
        head, _, rest = payload.partition(" ")
        try:
            env_id = uuid.UUID(head)
        except ValueError:
            return
        gone = set(rest.split())
        log.forget_where(
            env_id, lambda ids: any(key.hexdigest(i)[:DIGEST_CHARS] in gone for i in ids)
        )

    return heard


def of_message(message: Message, outcome: str, reason: str) -> Seen:
    """An entry for a valid message (a duplicate, or held in quarantine): its stored original,
    or its quarantined one, holds the whole JSON."""
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
        ids=tuple(i for i in (message.user_id, message.anonymous_id, message.previous_id) if i),
    )
