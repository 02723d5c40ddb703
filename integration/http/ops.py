"""Operations routes: /healthz (the process is up), /readyz (its dependencies answer) and
/metrics (Prometheus text). What to check and what to collect comes from the app's state, so
this module knows nothing of the database or the queue."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import TypedDict

from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from integration import __version__
from integration.deadline import within
from integration.errors import Unavailable
from integration.http.openapi import operation
from integration.http.responses import JSON
from integration.metrics import render

# Each dependency check has this long: a frozen dependency makes a 503, not a hang.
READY_CHECK_SECONDS = 2.0

Check = Callable[[], Awaitable[bool]]


class OpsState(TypedDict):
    checks: Mapping[str, Check]  # by name: True when that dependency answers
    collect_metrics: Callable[[], Awaitable[None]]  # refreshes what is read at scrape time


class Health(BaseModel):
    status: str
    version: str


class Readiness(BaseModel):
    status: str
    checks: dict[str, str]


@operation(summary="The process is up", response=Health, errors=(), tag="operations")
async def healthz(request: Request) -> Response:
    return JSON({"status": "ok", "version": __version__})


@operation(
    summary="Postgres and Redis are reachable (503 names the one that is not)",
    response=Readiness,
    errors=(),
    tag="operations",
)
async def readyz(request: Request[OpsState]) -> Response:
    checks = request.state["checks"]
    deadline = asyncio.get_running_loop().time() + READY_CHECK_SECONDS
    answers = await asyncio.gather(*(_answers(deadline, check()) for check in checks.values()))
    ok = all(answers)
    body = {
        "status": "ready" if ok else "unavailable",
        "checks": {n: "ok" if a else "unreachable" for n, a in zip(checks, answers, strict=True)},
    }
    return JSON(body, status_code=200 if ok else 503)


async def _answers(deadline: float, check: Awaitable[bool]) -> bool:
    try:
        return await within(deadline, check)
    except Unavailable:
        return False


@operation(
    summary="Prometheus metrics in the text exposition format",
    response=None,
    response_schema={"type": "string"},
    media_type="text/plain",
    errors=(),
    tag="operations",
)
async def metrics(request: Request[OpsState]) -> Response:
    await request.state["collect_metrics"]()
    return Response(render(), media_type=CONTENT_TYPE_LATEST)


routes = [Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics)]
