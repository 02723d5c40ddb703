"""Each message as Segment's edge would make it before storing it:

- a batch's envelope `context` and `integrations` are merged into each message (the message's
  own keys win);
- `writeKey` is taken out: it is our key, not one for Segment;
- timestamps as Segment sets them: `originalTimestamp` is the time the client gave,
  `receivedAt` ours, and `timestamp` is corrected for the client's clock skew,
  `receivedAt - (sentAt - originalTimestamp)`, when the client said when it sent the call.
  The message's own `sentAt` is dropped: the worker sends the time of each delivery attempt as
  the batch's `sentAt`, against which Segment makes the same correction again, now by nothing;
- a caller's `messageId` is kept (its retries dedupe in the outbox), and `context.library`
  (the caller's library) is kept, ours filled in only where there is none (`publish.normalise`).
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

from integration.intake.call import CallBody
from integration.spec import parse_time


def as_segment_would(body: CallBody) -> list[Any]:
    """Each message as Segment's edge would make it before storing it (module docstring)."""
    return [_edge(m, body) if isinstance(m, dict) else m for m in body.messages]


def _edge(message: dict[str, Any], body: CallBody) -> dict[str, Any]:
    out = dict(message)
    out.pop("writeKey", None)
    for name in ("context", "integrations"):
        envelope, own = getattr(body, name), out.get(name)
        if isinstance(envelope, dict) and (own is None or isinstance(own, dict)):
            out[name] = {**envelope, **(own or {})}
    sent_at = out.pop("sentAt", None) or body.sent_at
    _timestamps(out, parse_time(sent_at), body.received_at)
    return out


def _timestamps(message: dict[str, Any], sent_at: datetime | None, received_at: datetime) -> None:
    message["receivedAt"] = _iso(received_at)
    given = message.get("timestamp") or message.get("originalTimestamp")
    original = parse_time(given)
    if original is None:
        return  # absent: normalise() fills in now; unreadable: validation says so
    message["originalTimestamp"] = given
    # A skew that would leave the calendar is left uncorrected.
    with contextlib.suppress(OverflowError):
        if sent_at is not None:
            message["timestamp"] = _iso(received_at - (sent_at - original))


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
