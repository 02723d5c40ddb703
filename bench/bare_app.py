"""The ceiling: a bare Starlette endpoint doing the least a webhook must do (read the body,
parse it as JSON, answer 200 JSON), served exactly as `python -m integration serve` serves
the product (uvicorn factory app, no log config, no access log, no server header, uvicorn's
default loop and HTTP implementation from uvicorn[standard]).

    python -m bench.bare_app --port 8001
"""

from __future__ import annotations

import argparse

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def receive(request: Request) -> Response:
    payload = orjson.loads(await request.body())
    stored = len(payload) if isinstance(payload, list) else 1
    body = orjson.dumps({"stored": stored, "duplicates": 0, "rejected": []})
    return Response(body, media_type="application/json")


def create_app() -> Starlette:
    return Starlette(routes=[Route("/webhooks/segment/{webhook_key}", receive, methods=["POST"])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1, help="processes, as `serve --workers`")
    args = parser.parse_args()
    uvicorn.run(
        "bench.bare_app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_config=None,
        access_log=False,
        server_header=False,
    )


if __name__ == "__main__":
    main()
