"""POST /api/environments/{id}/product-events: the product's events, for Segment."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from integration.admin.common import environment, unit_of_work
from integration.errors import BadRequest
from integration.outbound.publish import publish
from integration.web import JSON, read_json


async def publish_events(request: Request) -> Response:
    body = await read_json(request, request.app.state.settings.max_body_bytes)
    if not isinstance(body, dict | list) or body == []:
        raise BadRequest(
            "body must be a message object or a non-empty array of them", error="invalid_body"
        )
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        result = await publish(session, env, body)
    out = result.as_dict()
    if result.accepted == 0:
        first = result.rejected[0]
        status = 400
        out = {"error": first["error"], "detail": first["detail"], **out}
    else:
        status = 202
    return JSON(out, status_code=status)


routes = [Route("/environments/{env_id}/product-events", publish_events, methods=["POST"])]
