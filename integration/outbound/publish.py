"""Publishing product events: validated, normalised, written to the outbox in the caller's
transaction. Nothing here talks to Segment; the worker does, from the outbox.

Inside the product, with sessions whose commits wake the worker:

    settings = get_settings()
    sessions = make_sessionmaker(make_engine(settings), enqueue=Queue(settings).send)
    async with transaction(sessions) as session:
        env = await environments.by_name(session, "production")
        await publish(session, env, {"type": "track", "userId": "u1", "event": "Flow Started"})
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from integration import LIBRARY_NAME, __version__
from integration.environments import current_mappings
from integration.environments.current_mappings import Current
from integration.environments.repository import Publishing
from integration.errors import Conflict
from integration.http.body import off_loop
from integration.metrics import MAPPING_FAILED, OUTBOUND_LEDGER, OUTBOUND_PUBLISHED
from integration.outbound import outbox
from integration.outbound.jobs import wake_delivery
from integration.plans.cache import plan_for
from integration.plans.gate import judge
from integration.spec import (
    KNOWN_TYPES,
    Message,
    MessageError,
    Rejection,
    company_of,
    encode,
    oversized,
    parse,
)
from integration.store.activity import count_mapping_failed
from integration.store.db import driver_of
from integration.store.events import event_row, insert_outbound_copies
from integration.store.models import OUTBOUND, Environment


@dataclass(slots=True)
class Published:
    stream_enabled: bool
    queued: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    dead: list[dict[str, str]] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    not_queued: int = 0  # accepted while the stream was off
    quarantined: list[str] = field(default_factory=list)  # held by the tracking plan

    @property
    def rejected(self) -> list[dict[str, Any]]:
        """The refused messages as publish()'s callers and answers read them."""
        return [r.as_dict() for r in self.rejections]

    @property
    def accepted(self) -> int:
        held = len(self.quarantined)
        return len(self.queued) + len(self.duplicates) + len(self.dead) + self.not_queued + held

    def as_dict(self) -> dict[str, Any]:
        out = {
            "accepted": self.accepted,
            "stream_enabled": self.stream_enabled,
            "queued": len(self.queued),
            "message_ids": self.queued,
            "duplicates": len(self.duplicates),
            "dead": self.dead,
            "rejected": self.rejected,
        }
        if self.quarantined:
            out["quarantined"] = len(self.quarantined)
        return out


def normalise(raw: dict[str, Any], now: datetime, *, keep_library: bool = False) -> dict[str, Any]:
    """Segment-ready: a messageId (kept when given), a timestamp, and a library in context:
    ours for the product's own events, or (`keep_library`, for messages a Segment library sent
    to the intake) the caller's, ours only where it named none. Only what is missing is filled
    in: a field of the wrong type is left for validation to refuse."""
    message = dict(raw)
    if isinstance(message.get("type"), str):
        message["type"] = message["type"].lower()
    given = message.get("messageId")
    if isinstance(given, int | float) and not isinstance(given, bool):
        message["messageId"] = str(given)  # as inbound keeps it, so a retry still dedupes
    elif given is None or (isinstance(given, str) and not given.strip()):
        message["messageId"] = str(uuid.uuid4())
    if message.get("timestamp") is None:
        message["timestamp"] = now.isoformat().replace("+00:00", "Z")
    context = message.get("context")
    if context is None or isinstance(context, dict):
        context = dict(context or {})
        if not (keep_library and context.get("library")):
            context["library"] = {"name": LIBRARY_NAME, "version": __version__}
        message["context"] = context
    return message


@dataclass(frozen=True, slots=True)
class Ready:
    """A message that passed the inbound rules, normalised, with its one encoding and, when
    that is over Segment's size rule, the rule's words (what is sent may not be refused: the
    outbox dead-letters it; the /v1 intake refuses the call, as Segment does)."""

    message: Message
    encoded: bytes
    too_large: str | None
    data: dict[str, Any]  # the message as JSON, what a mapping reads

    @property
    def mapping_error(self) -> str | None:
        return self.message.mapping_error


def prepare(
    items: list[Any], now: datetime, *, keep_library: bool = False
) -> tuple[list[Ready], list[Rejection]]:
    """Normalise and validate with the inbound rules; returns the ready messages and the
    rejections with reasons. Each message is encoded once, here; the outbox row carries those
    bytes."""
    ready: list[Ready] = []
    rejected: list[Rejection] = []
    for index, item in enumerate(items):
        try:
            if not isinstance(item, dict):
                raise MessageError("invalid_message", "each message must be a JSON object")
            normalised = normalise(item, now, keep_library=keep_library)
            encoded = encode(normalised)
            message = parse(normalised, now=now, sized=False, encoded=encoded)
            if message.type not in KNOWN_TYPES:
                raise MessageError(
                    "invalid_type", f"type must be one of {', '.join(sorted(KNOWN_TYPES))}"
                )
            # The size rule, consulted once: the outbox and the intake read its answer here.
            ready.append(Ready(message, encoded, oversized(len(encoded)), normalised))
        except MessageError as exc:
            # Named by index alone, as publish()'s answers have always named a refusal.
            rejected.append(Rejection(index, exc.error, exc.detail))
    return ready, rejected


async def publish(
    session: AsyncSession, env: Environment, messages: dict[str, Any] | list[Any]
) -> Published:
    """Accept product events for Segment. With the stream off they are accepted and dropped;
    with it on they join the outbox in this transaction (and the worker is woken once it
    commits). Invalid ones are listed, not raised."""
    items = messages if isinstance(messages, list) else [messages]
    ready, rejected = prepare(items, datetime.now(UTC))
    return await enqueue(session, env, ready, rejected)


async def publish_released(
    session: AsyncSession, env: Environment, messages: list[dict[str, Any]]
) -> Published:
    """Messages released from the quarantine into the outbox as they were held: normalised
    (their library kept), mapped and judged by the tracking plan when they were published, so
    neither again. Refused (409) while the stream is off, when they would be dropped."""
    if not (env.stream_enabled and env.segment_write_key):
        raise Conflict(
            "the stream to Segment is off (or has no write key): released outbound messages"
            " would not be sent; they stay quarantined until it is on",
            error="stream_off",
        )
    ready, rejected = prepare(messages, datetime.now(UTC), keep_library=True)
    return await enqueue(session, env, ready, rejected, judged=True)


async def enqueue(
    session: AsyncSession,
    env: Environment | Publishing,
    ready: list[Ready],
    rejected: list[Rejection],
    *,
    judged: bool = False,
) -> Published:
    """Prepared messages into the outbox (stream on) or nowhere (stream off), in the caller's
    transaction; with `store_outbound_events`, a copy of each into `events` either way. The
    one way into the outbox: `publish()` and the /v1 intake both end here. `judged`: released
    from the quarantine, past the steps below (it was mapped and judged when it came)."""
    # The outbound direction's step between validating and enqueueing, for every outbound
    # door: the environment's mapping, then the tracking plan (below, with the stream on).
    if not judged:
        latest = current_mappings.in_session(session)
        current = await current_mappings.of(session).get(env.id, OUTBOUND, latest)
        if current is not None:
            size = sum(len(r.encoded) for r in ready)  # a large call is mapped in a thread
            ready = await off_loop(size, mapped, current, ready, datetime.now(UTC))
    result = Published(env.stream_enabled, rejections=rejected)
    if env.stream_enabled and not judged:
        ready = await planned(session, env.id, ready, result)
    if env.store_outbound_events:
        await _keep_copies(session, env, ready)
    if not env.stream_enabled:
        result.not_queued = len(ready)
        OUTBOUND_PUBLISHED.labels("stream_off").inc(len(ready))
        await _count_mapping_failed(session, env.id, [r for r in ready if r.mapping_error])
        return result
    new = await outbox.insert(session, env.id, _rows(ready))
    failed = {r.message.message_id: r for r in ready if r.mapping_error}
    await _count_mapping_failed(session, env.id, [r for i, r in failed.items() if i in new])
    for r in ready:
        _tally(result, r, new)
    if result.queued:
        wake_delivery(session, env.id)
    return result


def mapped(current: Current, ready: list[Ready], now: datetime) -> list[Ready]:
    """Each message as the environment's outbound mapping makes it, encoded once again (a
    mapped message over Segment's size rule is a failed mapping). One the mapping fails on
    goes on unmapped, with the error attached."""
    out: list[Ready] = []
    for r in ready:
        result = current.apply(r.data, now=now)
        if result.error is not None:
            out.append(replace(r, message=replace(r.message, mapping_error=result.error)))
        elif result.parsed is not None and result.encoded is not None:
            out.append(Ready(result.parsed, result.encoded, None, result.message))
        else:
            out.append(r)
    return out


async def _count_mapping_failed(
    session: AsyncSession, env_id: uuid.UUID, failed: list[Ready]
) -> None:
    """Messages accepted unmapped: in the activity counts, in this transaction."""
    if failed:
        await count_mapping_failed(session, env_id, len(failed))
        MAPPING_FAILED.labels(OUTBOUND).inc(len(failed))


async def planned(
    session: AsyncSession, env_id: uuid.UUID, ready: list[Ready], result: Published
) -> list[Ready]:
    """The messages the environment's outbound tracking plan lets through to Segment; the rest
    are held whole in quarantine, in this transaction (integration/plans/gate.py). A message is
    sent to Segment once, so nothing is sent stripped. With the stream off nothing is sent, and
    nothing is judged."""
    plan = await plan_for(session, env_id, "outbound")
    if plan is None or not ready:
        return ready
    given = [r.message.raw or orjson.loads(r.encoded) for r in ready]
    pg = await driver_of(session)
    found = await judge(pg, plan, env_id, given)
    passed: list[Ready] = []
    claimed: set[str] = set()
    for r, verdict in zip(ready, found.verdicts, strict=True):
        message_id = r.message.message_id
        if not verdict.held:
            passed.append(r)
        elif message_id in found.quarantined and message_id not in claimed:
            claimed.add(message_id)
            result.quarantined.append(message_id)
        else:
            result.duplicates.append(message_id)  # quarantined before: a retry
    OUTBOUND_LEDGER.labels("quarantined", "").inc(len(result.quarantined))
    return passed


async def _keep_copies(
    session: AsyncSession, env: Environment | Publishing, ready: list[Ready]
) -> None:
    rows = [event_row(r.message, company_of(r.message, env.company_property)) for r in ready]
    await insert_outbound_copies(session, env.id, rows)


def _rows(ready: list[Ready]) -> bytes:
    """The outbox rows as one JSON array, each message's encoding spliced in as it is."""
    rows = []
    for r in ready:
        fields = orjson.dumps(
            {
                "message_id": r.message.message_id,
                "type": r.message.type,
                "size_bytes": len(r.encoded),
                "status": "dead" if r.too_large else "pending",
                "last_error": r.too_large,
                "mapping_error": r.mapping_error,
            }
        )
        rows.append(fields[:-1] + b',"payload":' + r.encoded + b"}")
    return b"[" + b",".join(rows) + b"]"


def _tally(result: Published, ready: Ready, new: set[str]) -> None:
    message_id = ready.message.message_id
    if message_id not in new:
        result.duplicates.append(message_id)
        return
    new.discard(message_id)  # a second copy in the same call is a duplicate, not a new row
    if ready.too_large:
        result.dead.append({"messageId": message_id, "detail": ready.too_large})
        OUTBOUND_PUBLISHED.labels("dead").inc()
    else:
        result.queued.append(message_id)
        OUTBOUND_PUBLISHED.labels("queued").inc()
