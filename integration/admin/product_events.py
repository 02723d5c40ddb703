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
from integration.spec import NoneValid, require_valid

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
    # `quarantined` is there only when the outbound tracking plan held some.
    out = PublishAnswer(**result.as_dict()).model_dump(mode="json", exclude_unset=True)
    try:
        require_valid(result.accepted, result.rejections)
    except NoneValid as none:
        # The admin API's shape: the first refusal's code and sentence, beside the answer.
        first = none.rejected[0]
        return JSON({"error": first.error, "detail": first.detail, **out}, status_code=400)
    return JSON(out, status_code=202)


routes = [Route("/environments/{env_id}/product-events", publish_events, methods=["POST"])]
