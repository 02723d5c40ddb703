"""What a /v1 call is: the headers the route read, the write key it carries, and its body as
messages with the envelope fields that apply to each of them, within Segment's limits."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from integration.errors import BadRequest
from integration.http.body import inflate, json_of
from integration.outbound.segment import MAX_BATCH_BYTES
from integration.spec import MAX_BATCH_MESSAGES

BATCH = "batch"
# What is read of a request, as sent or inflated, before it is refused with 413. Segment's own
# limit on a batch (500 KB, answered 400 as Segment answers it) is checked on what was read.
MAX_BODY_BYTES = 2 * MAX_BATCH_BYTES
# Segment caps a batch by its bytes only (500 KB), which holds some 170,000 `{}`: validating
# them took 3.5 s, and listing each refusal made a 15 MB answer. A batch is capped at the
# webhook's count as well (MAX_BATCH_MESSAGES: Segment's libraries send at most a few
# hundred), and an answer lists the first refusals and counts the rest (answers.py).


@dataclass(frozen=True, slots=True)
class Call:
    """One request to the intake, as the route read it from the headers."""

    kind: str  # a message type, or "batch"
    client: str
    authorization: str | None = None
    content_encoding: str | None = None
    origin: str | None = None


@dataclass(slots=True)
class CallBody:
    """A call's messages, and the envelope fields that apply to each of them."""

    messages: list[Any]
    size: int = 0  # bytes, inflated
    write_key: Any = None
    sent_at: Any = None
    context: Any = None
    integrations: Any = None
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def basic_user(authorization: str | None) -> str | None:
    """The user name of an HTTP Basic Authorization header (Segment's write key, with an
    empty password or, as Segment tolerates, no colon at all); None for any other header."""
    scheme, _, credentials = (authorization or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode()
    except ValueError:  # not base64 (binascii.Error), not ASCII, or not UTF-8 once decoded
        return None
    return decoded.partition(":")[0]


def parse_call(kind: str, raw: bytes, encoding: str | None) -> CallBody:
    """The body as sent (inflated, within MAX_BODY_BYTES), within Segment's batch limit, as
    JSON, as messages. Raises in Segment's terms for what Segment refuses."""
    body = inflate(raw, encoding, MAX_BODY_BYTES)
    if len(body) > MAX_BATCH_BYTES:
        raise BadRequest(
            f"the request is {len(body)} bytes; the maximum is {MAX_BATCH_BYTES} bytes"
            " (500 KB) per request",
            error="payload_too_large",
        )
    data = json_of(body, empty="the body is empty; send a JSON object", invalid="Invalid JSON")
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object", error="invalid_json")
    out = _batch(data) if kind == BATCH else _single(kind, data)
    out.size = len(body)
    return out


def _batch(data: dict[str, Any]) -> CallBody:
    items = data.get("batch")
    if not isinstance(items, list) or not items:
        raise BadRequest("batch must be a non-empty array of messages", error="invalid_batch")
    if len(items) > MAX_BATCH_MESSAGES:
        raise BadRequest(
            f"the batch holds {len(items)} messages; at most {MAX_BATCH_MESSAGES} are accepted"
            " per request",
            error="too_many_messages",
        )
    return CallBody(
        items,
        write_key=data.get("writeKey"),
        sent_at=data.get("sentAt"),
        context=data.get("context"),
        integrations=data.get("integrations"),
    )


def _single(kind: str, data: dict[str, Any]) -> CallBody:
    # The route names the call's type, whatever the body says (as /v1/track does).
    return CallBody([{**data, "type": kind}], write_key=data.get("writeKey"))
