"""Segment's HTTP Tracking API, batch endpoint: one POST, and what its answer means for us."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal

import httpx
import orjson

from integration import LIBRARY_NAME, __version__

MAX_BATCH_BYTES = 500 * 1024
# Segment answers 200 to a batch of more events than this and drops it, so no batch is bigger,
# however small its events.
MAX_BATCH_EVENTS = 2500
# Room for the envelope around the messages: {"batch":[...],"sentAt":"..."}.
BATCH_BUDGET = MAX_BATCH_BYTES - 1024
USER_AGENT = f"{LIBRARY_NAME}/{__version__}"

Outcome = Literal["delivered", "retry", "dead"]


@dataclass(frozen=True, slots=True)
class Answer:
    outcome: Outcome
    status: int | None
    body: str
    retry_after: float | None = None
    error: str | None = None

    def describe(self) -> str:
        if self.status is None:
            return self.error or "no response"
        return f"HTTP {self.status}: {self.body[:500]}"


def basic_auth(write_key: str) -> str:
    """Segment's scheme: the write key as the user name and an empty password."""
    return "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()


def pack(
    sizes: list[int], budget: int = BATCH_BUDGET, max_events: int = MAX_BATCH_EVENTS
) -> list[range]:
    """Split messages (by encoded size, in order) into runs that fit one request each: within
    the byte budget and at most `max_events` messages."""
    runs: list[range] = []
    start, total = 0, 0
    for i, size in enumerate(sizes):
        extra = size + 1  # the comma between messages
        if i > start and (total + extra > budget or i - start >= max_events):
            runs.append(range(start, i))
            start, total = i, 0
        total += extra
    if start < len(sizes):
        runs.append(range(start, len(sizes)))
    return runs


def body(encoded: list[bytes]) -> bytes:
    sent_at = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return b'{"batch":[' + b",".join(encoded) + b'],"sentAt":' + orjson.dumps(sent_at) + b"}"


async def send_batch(
    http: httpx.AsyncClient, api_url: str, write_key: str, encoded: list[bytes]
) -> Answer:
    """POST {api_url}/v1/batch. Never raises for network trouble: that is an Answer too."""
    try:
        response = await http.post(
            f"{api_url}/v1/batch",
            content=body(encoded),
            headers={
                "Authorization": basic_auth(write_key),
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
            },
        )
    except httpx.TimeoutException as exc:
        return Answer("retry", None, "", error=f"timed out: {type(exc).__name__}")
    except httpx.HTTPError as exc:
        return Answer("retry", None, "", error=f"network error: {type(exc).__name__}: {exc}")
    return classify(response)


def classify(response: httpx.Response) -> Answer:
    status = response.status_code
    text = response.text[:2000]
    if 200 <= status < 300:
        return Answer("delivered", status, text)
    if status == 429 or status >= 500:
        return Answer("retry", status, text, retry_after=retry_after(response.headers))
    return Answer("dead", status, text)


def retry_after(headers: httpx.Headers) -> float | None:
    """Retry-After as seconds or an HTTP date; None when absent or unreadable."""
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
