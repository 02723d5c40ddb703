"""POST /webhooks/segment/{webhook_key}: Segment's Webhooks destination posts here."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from integration.errors import AppError, BadRequest
from integration.inbound import service
from integration.inbound.batcher import Parsed
from integration.metrics import INBOUND_MESSAGES, children
from integration.openapi import Rejection, operation
from integration.spec import KNOWN_TYPES, MessageError, decode, parse_batch
from integration.web import JSON, read_body


class Received(BaseModel):
    stored: int
    duplicates: int
    rejected: list[Rejection]


@operation(
    summary="Segment's Webhooks destination posts one message or an array of them here",
    body_schema={"oneOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}}]},
    response=Received,
    errors=(400, 401, 413),
    tag="inbound",
)
async def receive(request: Request) -> Response:
    state = request.app.state
    body = await read_body(request, state.settings.max_body_bytes)
    parsed = _parse(body)
    # The batcher answers 401 for a bad key or signature before any 400 for the body.
    stored, duplicates = await state.ingest.submit(
        request.path_params["webhook_key"], body, request.headers.get("x-signature"), parsed
    )
    assert isinstance(parsed, Parsed)
    _count(parsed.validated)
    return _respond(parsed.items, parsed.validated, stored, duplicates)


def _parse(body: bytes) -> Parsed | AppError:
    try:
        items = _items(body)
    except AppError as exc:
        return exc
    return Parsed(items, service.validate(items))


def _items(body: bytes) -> list[Any]:
    if not body.strip():
        raise BadRequest(
            "body is empty; send a Segment message or an array of them", error="invalid_json"
        )
    try:
        return parse_batch(decode(body))
    except MessageError as exc:
        raise BadRequest(exc.detail, error=exc.error) from None


_inbound_messages = children(INBOUND_MESSAGES)


def _count(validated: service.Validated) -> None:
    for m in validated.messages:
        # Unknown types are stored, but a caller must not be able to mint metric labels.
        kind = m.type if m.type in KNOWN_TYPES else "other"
        _inbound_messages(kind, "accepted").inc()
    if validated.rejected:
        _inbound_messages("invalid", "rejected").inc(len(validated.rejected))


def _respond(
    items: list[Any], validated: service.Validated, stored: int, duplicates: int
) -> Response:
    rejected = [r.as_dict() for r in validated.rejected]
    if not validated.messages:
        first = validated.rejected[0]
        if len(items) == 1:
            return JSON({"error": first.error, "detail": first.detail}, status_code=400)
        return JSON(
            {
                "error": "invalid_batch",
                "detail": "no message in the batch is valid",
                "rejected": rejected,
            },
            status_code=400,
        )
    return JSON({"stored": stored, "duplicates": duplicates, "rejected": rejected})


routes = [Route("/webhooks/segment/{webhook_key}", receive, methods=["POST"])]
