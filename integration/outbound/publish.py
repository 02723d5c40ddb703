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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from integration import LIBRARY_NAME, __version__
from integration.metrics import OUTBOUND_PUBLISHED
from integration.outbound.jobs import wake_delivery
from integration.spec import KNOWN_TYPES, MAX_MESSAGE_BYTES, MessageError, parse, too_large
from integration.store.models import Environment


@dataclass(slots=True)
class Published:
    stream_enabled: bool
    queued: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    dead: list[dict[str, str]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    not_queued: int = 0  # accepted while the stream was off

    @property
    def accepted(self) -> int:
        return len(self.queued) + len(self.duplicates) + len(self.dead) + self.not_queued

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "stream_enabled": self.stream_enabled,
            "queued": len(self.queued),
            "message_ids": self.queued,
            "duplicates": len(self.duplicates),
            "dead": self.dead,
            "rejected": self.rejected,
        }


def normalise(raw: dict[str, Any], now: datetime) -> dict[str, Any]:
    """Segment-ready: a messageId (kept when given), a timestamp, and our library in context."""
    message = dict(raw)
    message["type"] = str(message["type"]).lower()
    message["messageId"] = _given_id(message.get("messageId")) or str(uuid.uuid4())
    if not message.get("timestamp"):
        message["timestamp"] = now.isoformat().replace("+00:00", "Z")
    context = dict(message.get("context") or {})
    context["library"] = {"name": LIBRARY_NAME, "version": __version__}
    message["context"] = context
    return message


def _given_id(value: Any) -> str | None:
    """The caller's messageId as text: numbers are kept as their text, as inbound does, so
    publishing the same event again still dedupes."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    return value if isinstance(value, str) and value.strip() else None


def check(items: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Validate with the inbound rules; returns (valid raw messages, rejections with reasons)."""
    valid: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        try:
            message = parse(item, max_bytes=None)
            if message.type not in KNOWN_TYPES:
                raise MessageError(
                    "invalid_type", f"type must be one of {', '.join(sorted(KNOWN_TYPES))}"
                )
            valid.append(item)
        except MessageError as exc:
            rejected.append({"index": index, "error": exc.error, "detail": exc.detail})
    return valid, rejected


INSERT_OUTBOX = text("""
INSERT INTO outbox (environment_id, message_id, type, payload, size_bytes, status, last_error)
SELECT CAST(:env AS uuid), r.message_id, r.type, r.payload, r.size_bytes, r.status, r.last_error
FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(
    message_id text, type text, payload jsonb, size_bytes int, status text, last_error text)
ON CONFLICT (environment_id, message_id) DO NOTHING
RETURNING message_id
""")


async def publish(
    session: AsyncSession, env: Environment, messages: dict[str, Any] | list[Any]
) -> Published:
    """Accept product events for Segment. With the stream off they are accepted and dropped;
    with it on they join the outbox in this transaction. Invalid ones are listed, not raised."""
    items = messages if isinstance(messages, list) else [messages]
    valid, rejected = check(items)
    result = Published(stream_enabled=env.stream_enabled, rejected=rejected)
    if not env.stream_enabled:
        result.not_queued = len(valid)
        OUTBOUND_PUBLISHED.labels("stream_off").inc(len(valid))
        return result
    now = datetime.now(UTC)
    rows = [_row(normalise(raw, now)) for raw in valid]
    inserted = await session.execute(
        INSERT_OUTBOX, {"env": str(env.id), "rows": orjson.dumps(rows).decode()}
    )
    new = set(inserted.scalars())
    for row in rows:
        _tally(result, row, new)
    if result.queued:
        wake_delivery(session, env.id)
    return result


def _row(message: dict[str, Any]) -> dict[str, Any]:
    size = len(orjson.dumps(message))
    oversized = size > MAX_MESSAGE_BYTES
    return {
        "message_id": message["messageId"],
        "type": message["type"],
        "payload": message,
        "size_bytes": size,
        "status": "dead" if oversized else "pending",
        "last_error": too_large(size) if oversized else None,
    }


def _tally(result: Published, row: dict[str, Any], new: set[str]) -> None:
    message_id = row["message_id"]
    if message_id not in new:
        result.duplicates.append(message_id)
        return
    new.discard(message_id)  # a second copy in the same call is a duplicate, not a new row
    if row["status"] == "dead":
        result.dead.append({"messageId": message_id, "detail": row["last_error"]})
        OUTBOUND_PUBLISHED.labels("dead").inc()
    else:
        result.queued.append(message_id)
        OUTBOUND_PUBLISHED.labels("queued").inc()
