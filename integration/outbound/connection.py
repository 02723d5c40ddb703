"""`env test` and the admin test-connection: one real event to Segment, its answer in words."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from integration.config import Settings
from integration.crypto import SecretBox
from integration.environments import service as environments
from integration.environments.api_url import allowed, not_allowed
from integration.outbound import segment
from integration.outbound.events import CONNECTION_TESTED
from integration.outbound.publish import normalise
from integration.store.models import Environment


@dataclass(frozen=True, slots=True)
class TestResult:
    ok: bool
    summary: str
    status: int | None
    response: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "summary": self.summary,
            "status": self.status,
            "response": self.response,
        }


def _explain(answer: segment.Answer, api_url: str) -> TestResult:
    """The answer in words, with at most Segment's own error field: never the remote body."""
    reason = answer.reason
    if answer.outcome == "delivered":
        return TestResult(
            True, f"OK: Segment ({api_url}) accepted the test event.", answer.status, reason
        )
    if answer.status in (401, 403):
        words = (
            "Segment rejected the write key: check the Segment write key (your HTTP API source's)."
        )
    elif answer.status is None:
        words = f"Could not reach Segment at {api_url}: {answer.error}."
    elif answer.status == 429:
        words = "Segment is rate limiting this source; try again in a moment."
    elif answer.status >= 500:
        words = f"Segment had a server error (HTTP {answer.status}); try again later."
    else:
        words = f"Segment refused the test event ({answer.describe()})."
    return TestResult(False, words, answer.status, reason)


async def test_connection(
    env: Environment, box: SecretBox, http: httpx.AsyncClient, settings: Settings
) -> TestResult:
    if not allowed(env.segment_api_url, settings.segment_api_hosts):
        advice = "set segment_api_url to 'us', 'eu' or an allowed host."
        return TestResult(
            False, f"Not sent: {not_allowed(env.segment_api_url)}; {advice}", None, ""
        )
    key = environments.write_key(env, box)
    if not key:
        return TestResult(
            False,
            "No write key set: set the Segment write key (your HTTP API source's) first.",
            None,
            "",
        )
    message = normalise(
        {
            "type": "track",
            "anonymousId": f"environment-{env.id}",
            "event": CONNECTION_TESTED,
            "properties": {"environment": env.name},
            "messageId": str(uuid.uuid4()),
        },
        datetime.now(UTC),
    )
    answer = await segment.send_batch(
        http,
        env.segment_api_url,
        key,
        [orjson.dumps(message)],
        timeout=settings.segment_timeout_seconds,
    )
    return _explain(answer, env.segment_api_url)


async def test_by_name(session: AsyncSession, settings: Settings, name: str) -> TestResult:
    settings.require("secret_key")
    env = await environments.by_name(session, name)
    async with httpx.AsyncClient(timeout=settings.segment_timeout_seconds) as http:
        return await test_connection(env, SecretBox.of(settings), http, settings)
