"""/webhooks/segment/{webhook_key}: Segment's Webhooks destinations post (or put, or patch) here."""

from __future__ import annotations

from typing import TypedDict

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from integration.config import Settings
from integration.http.body import ByteBudget, read_bounded
from integration.http.openapi import RejectionBody, operation
from integration.http.responses import JSON
from integration.inbound.service import Inbound
from integration.throttle import client_key


class InboundState(TypedDict):
    """What the webhook route reads of the app's state."""

    settings: Settings
    inbound: Inbound
    body_budget: ByteBudget


# Webhooks (Actions) lets the user pick the method; the classic destination always posts.
METHODS = ["POST", "PUT", "PATCH"]


class Deleted(BaseModel):
    events: int
    memberships: int
    anonymous_ids: int
    users: int
    outbox: int


class ReceivedBody(BaseModel):
    stored: int
    duplicates: int
    rejected: list[RejectionBody]
    deleted: Deleted | None = None
    quarantined: int | None = Field(
        None, description="held whole by the tracking plan (received, kept, not stored yet)"
    )


@operation(
    summary="Segment's Webhooks destination sends one message or an array of up to 4,000 here",
    body_schema={
        "oneOf": [
            {"type": "object"},
            {"type": "array", "items": {"type": "object"}, "maxItems": 4000},
        ]
    },
    response=ReceivedBody,
    errors=(400, 401, 413, 429),
    tag="inbound",
)
async def receive(request: Request[InboundState]) -> Response:
    limit = request.state["settings"].max_body_bytes
    with request.state["body_budget"].reserve() as held:
        received = await request.state["inbound"].receive(
            request.path_params["webhook_key"],
            client=client_key(request.scope),
            given_signature=request.headers.get("x-signature"),
            read_body=lambda: read_bounded(request, limit, held),
        )
    return JSON(received.as_dict())


routes = [Route("/webhooks/segment/{webhook_key}", receive, methods=METHODS)]
