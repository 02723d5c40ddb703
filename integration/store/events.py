"""Rows of the `events` table: what a message becomes as an event, and the one statement that
writes outbound copies.

The table is the inbound side's record of what Segment sent; an environment with
`store_outbound_events` also keeps there a copy of each message it publishes for Segment
(direction 'outbound'), so an operator browsing events sees both. The copy is written here, in
the store both directions sit on, rather than by the inbound package: the outbound side must
not reach into inbound (tests/test_layout.py), and a copy is only an insert, with none of the
profile effects (traits, links, memberships) that inbound ingestion applies.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from integration.spec import Message


def blocked_user_id(user_id: str | None, extra: dict[str, Any] | None) -> str | None:
    """The userId a stored message came with and was stored without, being a blocked value
    (integration/environments/identity.py): the message's own userId stays in `extra`, so the
    stored message reads as it was sent."""
    value = (extra or {}).get("userId") if user_id is None else None
    return value if isinstance(value, str) else None


def event_row(m: Message, company: str | None) -> dict[str, Any]:
    """A message as an `events` row (without environment and direction)."""
    extra = m.extra
    if m.type == "alias":
        extra = {**(extra or {}), "previousId": m.previous_id}
    return {
        "message_id": m.message_id,
        "type": m.type,
        "name": m.name,
        "user_id": m.user_id,
        "anonymous_id": m.anonymous_id,
        "group_id": company,
        "properties": m.properties,
        "traits": m.traits,
        "context": m.context,
        "extra": extra,
        "timestamp": m.timestamp,
        "sent_at": m.sent_at,
        "received_at": m.received_at,
        "mapping_error": m.mapping_error,
    }


# A copy published twice (a caller's retry with the same messageId) is kept once.
INSERT_OUTBOUND_COPIES = text("""
INSERT INTO events (environment_id, direction, message_id, type, name, user_id, anonymous_id,
                    group_id, properties, traits, context, extra, timestamp, sent_at, received_at,
                    mapping_error)
SELECT CAST(:env AS uuid), 'outbound', r.message_id, r.type, r.name, r.user_id, r.anonymous_id,
       r.group_id, r.properties, r.traits, r.context, r.extra, r.timestamp, r.sent_at,
       r.received_at, r.mapping_error
FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(
    message_id text, type text, name text, user_id text, anonymous_id text, group_id text,
    properties jsonb, traits jsonb, context jsonb, extra jsonb,
    timestamp timestamptz, sent_at timestamptz, received_at timestamptz, mapping_error text)
ON CONFLICT (environment_id, message_id, direction) DO NOTHING
""")


async def insert_outbound_copies(
    session: AsyncSession, env_id: uuid.UUID, rows: list[dict[str, Any]]
) -> None:
    """Keep copies of outbound messages (rows made by `event_row`) in the caller's transaction."""
    if rows:
        params = {"env": str(env_id), "rows": orjson.dumps(rows).decode()}
        await session.execute(INSERT_OUTBOUND_COPIES, params)
