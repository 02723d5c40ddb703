"""POST /api/environments/{id}/product-events: the product's events, for Segment."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from integration.admin.common import AdminRequest, environment, unit_of_work
from integration.admin.schemas import PublishAnswer
from integration.errors import BadRequest
from integration.http.body import read_json
from integration.http.openapi import operation
from integration.http.responses import JSON
from integration.outbound.publish import publish

MESSAGES_SCHEMA = {
    "oneOf": [
        {"type": "object", "description": "one Segment spec message"},
        {"type": "array", "items": {"type": "object"}, "minItems": 1},
    ]
}


@operation(
    summary="Publish product events (Segment spec messages) for Segment",
    scope="publish",
    body_schema=MESSAGES_SCHEMA,
    response=PublishAnswer,
    status=202,
    errors=(401, 404, 413),
)
async def publish_events(request: AdminRequest) -> Response:
    body = await read_json(request, request.state["settings"].max_body_bytes)
    if not isinstance(body, dict | list) or body == []:
        raise BadRequest(
            "body must be a message object or a non-empty array of them", error="invalid_body"
        )
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        result = await publish(session, env, body)
    out = PublishAnswer(**result.as_dict()).model_dump(mode="json")
    if result.accepted == 0:
        first = result.rejected[0]
        status = 400
        out = {"error": first["error"], "detail": first["detail"], **out}
    else:
        status = 202
    return JSON(out, status_code=status)


routes = [Route("/environments/{env_id}/product-events", publish_events, methods=["POST"])]
