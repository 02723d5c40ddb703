"""/v1/...: Segment's HTTP Tracking API, so that Segment's libraries and tools publish here
(the service is intake/service.py). Answers and errors are in Segment's shapes: `{"success":
true}`, and `{"success": false, "code": ..., "message": ...}` (the fields Segment's libraries
read) with Segment's status codes.

Besides Segment's documented paths, the one-letter ones analytics.js posts to (`/v1/t`, and
`/v1/b` when it batches) are served too, so that analytics.js with `apiHost` set to this
server works unchanged. A CORS preflight is answered for any of them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypedDict

from pydantic import BaseModel
from pydantic.json_schema import SkipJsonSchema
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from integration.errors import Forbidden, NotFound
from integration.http.body import ByteBudget, read_bounded
from integration.http.openapi import ErrorShape, RejectionBody, operation, optional
from integration.http.responses import JSON
from integration.intake.call import BATCH, MAX_BODY_BYTES, Call
from integration.intake.service import Intake
from integration.throttle import client_key


class IntakeState(TypedDict):
    """What the intake's routes read of the app's state."""

    intake: Intake
    body_budget: ByteBudget


IntakeRequest = Request[IntakeState]


class SegmentError(BaseModel):
    """An error as Segment's Tracking API writes one (its libraries read `code` and
    `message`)."""

    success: bool
    code: str
    message: str
    rejected: list[RejectionBody] | SkipJsonSchema[None] = optional(
        "When no message of a batch is valid: the first 100, each one's index and reason"
    )
    rejected_count: int | SkipJsonSchema[None] = optional(
        "How many messages were refused (more than are listed past 100)"
    )


def _segment_error(error: str, detail: str, extra: dict[str, Any]) -> dict[str, Any]:
    return {"success": False, "code": error, "message": detail, **extra}


SEGMENT_ERRORS = ErrorShape(SegmentError, _segment_error)


class IntakeAnswer(BaseModel):
    success: bool
    queued: int | SkipJsonSchema[None] = optional("0 when the stream to Segment is off")
    stream_enabled: bool | SkipJsonSchema[None] = optional("false when the stream is off")
    detail: str | SkipJsonSchema[None] = optional("What happened, when not simply queued")
    rejected: list[RejectionBody] | SkipJsonSchema[None] = optional(
        "Messages of a batch that were not valid (the valid ones were accepted): the first 100"
    )
    rejected_count: int | SkipJsonSchema[None] = optional(
        "How many messages were not valid (more than are listed past 100)"
    )


# Path -> the call it is. The one-letter paths are analytics.js's.
CALLS = {
    "identify": "identify",
    "track": "track",
    "page": "page",
    "screen": "screen",
    "group": "group",
    "alias": "alias",
    "batch": BATCH,
    "import": BATCH,
    "i": "identify",
    "t": "track",
    "p": "page",
    "s": "screen",
    "g": "group",
    "a": "alias",
    "b": BATCH,
}
ENVELOPE = {
    "writeKey": {"type": "string", "description": "the intake write key, if not in the header"},
    "sentAt": {"type": "string", "format": "date-time"},
}
MESSAGE_SCHEMA = {
    "type": "object",
    "description": "one Segment spec message of this call's type",
    "properties": {
        **ENVELOPE,
        "userId": {"type": "string"},
        "anonymousId": {"type": "string"},
        "messageId": {"type": "string"},
        "timestamp": {"type": "string", "format": "date-time"},
        "context": {"type": "object"},
        "integrations": {"type": "object"},
    },
}
BATCH_SCHEMA = {
    "type": "object",
    "required": ["batch"],
    "properties": {
        **ENVELOPE,
        "batch": {"type": "array", "items": {"type": "object"}, "minItems": 1, "maxItems": 4000},
        "context": {"type": "object", "description": "merged into each message's context"},
        "integrations": {"type": "object", "description": "merged into each message's"},
    },
}
ERRORS = (400, 401, 403, 413, 415, 429)

Endpoint = Callable[[IntakeRequest], Awaitable[Response]]


def _endpoint(path: str, kind: str) -> Endpoint:
    async def endpoint(request: IntakeRequest) -> Response:
        headers = request.headers
        call = Call(
            kind,
            client_key(request.scope),
            authorization=headers.get("authorization"),
            content_encoding=headers.get("content-encoding"),
            origin=headers.get("origin"),
        )
        with request.state["body_budget"].reserve() as held:
            accepted = await request.state["intake"].receive(
                call, lambda: read_bounded(request, MAX_BODY_BYTES, held), held.grow
            )
        return JSON(accepted.as_dict(), headers=accepted.headers())

    # Operation ids come from the endpoint's name: one per path.
    name = path if len(path) > 1 else f"{kind}_{path}"
    endpoint.__name__ = endpoint.__qualname__ = f"{name}_" if name == "import" else name
    what = "a batch of messages" if kind == BATCH else f"one {kind} call"
    short = " (analytics.js's short path)" if len(path) == 1 else ""
    return operation(
        summary=f"Segment Tracking API: {what}{short}; 200 once committed to the outbox",
        body_schema=BATCH_SCHEMA if kind == BATCH else MESSAGE_SCHEMA,
        response=IntakeAnswer,
        errors=ERRORS,
        tag="intake",
        security=("writeKey",),
        error_shape=SEGMENT_ERRORS,
    )(endpoint)


@operation(
    summary="CORS preflight for a /v1 path: allowed for origins an environment lists",
    response=None,
    status=204,
    errors=(403, 404),
    tag="intake",
    error_shape=SEGMENT_ERRORS,
)
async def preflight(request: IntakeRequest) -> Response:
    if request.path_params["call"] not in CALLS:
        raise NotFound(f"no Tracking API call {request.path_params['call'][:40]!r}")
    origin = request.headers.get("origin")
    if origin is None:  # not a browser's preflight: say what the path takes
        return Response(status_code=204, headers={"Allow": "POST, OPTIONS"})
    method = request.headers.get("access-control-request-method")
    headers = await request.state["intake"].preflight(origin, method)
    if headers is None:
        raise Forbidden(
            "no environment allows this origin to POST here (cors_allowed_origins)",
            error="origin_not_allowed",
        )
    return Response(status_code=204, headers=headers)


routes = [
    *(
        Route(f"/v1/{path}", _endpoint(path, kind), methods=["POST"])
        for path, kind in CALLS.items()
    ),
    Route("/v1/{call}", preflight, methods=["OPTIONS"]),
]
