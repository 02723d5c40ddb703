"""POST /webhooks/segment/{webhook_key}: Segment's Webhooks destination posts here."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from integration.crypto import SecretBox, signature_valid
from integration.environments import service as environments
from integration.environments.service import KeyMatch
from integration.errors import BadRequest, Unauthorized
from integration.inbound import service
from integration.metrics import INBOUND_MESSAGES
from integration.openapi import Rejection, operation
from integration.spec import MessageError, decode, parse_batch
from integration.store.db import with_retries
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
    key = request.path_params["webhook_key"]
    signature = request.headers.get("x-signature")
    parsed: list[tuple[list[Any], service.Validated]] = []

    async def work() -> tuple[int, int]:
        # One connection and one transaction: the key lookup, then the writes.
        async with state.engine.begin() as conn:
            env = await environments.match_webhook_key(conn, key)
            if env is None:
                raise Unauthorized("unknown webhook key", error="unknown_webhook_key")
            _check_signature(env, state.box, body, signature)
            if not parsed:  # validated once, even when a deadlock makes us run again
                items = _items(body)
                parsed.append((items, service.validate(items)))
            messages = parsed[0][1].messages
            if not messages:
                return 0, 0
            return await service.store(conn, env.id, env.company_property, messages)

    stored, duplicates = await with_retries(work)
    items, validated = parsed[0]
    _count(validated)
    return _respond(items, validated, stored, duplicates)


def _items(body: bytes) -> list[Any]:
    if not body.strip():
        raise BadRequest(
            "body is empty; send a Segment message or an array of them", error="invalid_json"
        )
    try:
        return parse_batch(decode(body))
    except MessageError as exc:
        raise BadRequest(exc.detail, error=exc.error) from None


def _check_signature(env: KeyMatch, box: SecretBox, body: bytes, given: str | None) -> None:
    secret = environments.signing_secret(env, box)
    if secret and not signature_valid(secret, body, given):
        raise Unauthorized(
            "X-Signature is missing or is not the HMAC-SHA1 of the body with this environment's"
            " signing secret",
            error="invalid_signature",
        )


def _count(validated: service.Validated) -> None:
    for m in validated.messages:
        INBOUND_MESSAGES.labels(type=m.type, outcome="accepted").inc()
    if validated.rejected:
        INBOUND_MESSAGES.labels(type="invalid", outcome="rejected").inc(len(validated.rejected))


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
