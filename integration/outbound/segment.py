"""Segment's HTTP Tracking API, batch endpoint: one POST, and what its answer means for us."""

from __future__ import annotations

import asyncio
import base64
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal

import httpx
import orjson

from integration import LIBRARY_NAME, __version__
from integration.config import KIB

MAX_BATCH_BYTES = 500 * KIB
# Segment answers 200 to a batch of more events than this and drops it, so no batch is bigger,
# however small its events.
MAX_BATCH_EVENTS = 2500
# Room for the envelope around the messages: {"batch":[...],"sentAt":"..."}.
BATCH_BUDGET = MAX_BATCH_BYTES - KIB
USER_AGENT = f"{LIBRARY_NAME}/{__version__}"

Outcome = Literal["delivered", "retry", "dead"]


# Of an answer, at most this much is read: Segment's answers are a few dozen bytes, and
# anything longer is not Segment's and not ours to hold.
MAX_ANSWER_BYTES = 4096
# Of Segment's own error fields, this much is kept (for the admin API and test-connection).
MAX_ERROR_CHARS = 200
# The fields of Segment's answer we keep; nothing else of a remote body is stored or shown.
ANSWER_FIELDS = {"success": bool, "code": str, "message": str, "error": str}


@dataclass(frozen=True, slots=True)
class Answer:
    outcome: Outcome
    status: int | None
    # Segment's answer reduced to its known fields (`success`, `code`, `message`, `error`),
    # strings capped: never the raw body, which an allowlisted proxy could fill with anything.
    fields: dict[str, str | bool] = field(default_factory=dict)
    retry_after: float | None = None
    error: str | None = None

    @property
    def reason(self) -> str:
        """Segment's own error field (`message`, else `error`), capped; "" when it sent none."""
        for name in ("message", "error"):
            value = self.fields.get(name)
            if isinstance(value, str) and value:
                return value
        return ""

    @property
    def body(self) -> str:
        """What is stored as the delivery's response: the kept fields as JSON, or ""."""
        return orjson.dumps(self.fields).decode() if self.fields else ""

    def describe(self) -> str:
        if self.status is None:
            return self.error or "no response"
        return f"HTTP {self.status}: {self.reason}" if self.reason else f"HTTP {self.status}"


def answer_fields(head: bytes) -> dict[str, str | bool]:
    """The known fields of a (short) JSON answer; {} for anything else."""
    try:
        data = orjson.loads(head)
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(data, dict):
        return {}
    kept: dict[str, str | bool] = {}
    for name, kind in ANSWER_FIELDS.items():
        value = data.get(name)
        if isinstance(value, str) and kind is str:
            kept[name] = value[:MAX_ERROR_CHARS]
        elif isinstance(value, bool) and kind is bool:
            kept[name] = value
    return kept


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
    http: httpx.AsyncClient,
    api_url: str,
    write_key: str,
    encoded: list[bytes],
    *,
    timeout: float,  # noqa: ASYNC109 - one deadline for the whole exchange, not per read
) -> Answer:
    """POST {api_url}/v1/batch. Never raises for network trouble: that is an Answer too.

    The whole exchange, answer included, has one deadline (httpx's own timeouts are per read,
    which a host dripping bytes never trips), and at most MAX_ANSWER_BYTES of the answer are
    read."""
    request = http.build_request(
        "POST",
        f"{api_url}/v1/batch",
        content=body(encoded),
        headers={
            "Authorization": basic_auth(write_key),
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            # Read raw and capped: a compressed answer could inflate far past the cap.
            "Accept-Encoding": "identity",
        },
    )
    try:
        async with asyncio.timeout(timeout):
            response = await http.send(request, stream=True)
            try:
                head = await _read_head(response)
            finally:
                await response.aclose()
    except (TimeoutError, httpx.TimeoutException) as exc:
        return Answer("retry", None, error=f"timed out: {type(exc).__name__}")
    except httpx.HTTPError as exc:
        return Answer("retry", None, error=f"network error: {type(exc).__name__}: {exc}")
    return classify(response.status_code, response.headers, head)


async def _read_head(response: httpx.Response) -> bytes:
    head = b""
    async for chunk in response.aiter_raw():
        head += chunk
        if len(head) >= MAX_ANSWER_BYTES:
            break
    return head[:MAX_ANSWER_BYTES]


def classify(status: int, headers: httpx.Headers, head: bytes) -> Answer:
    fields = answer_fields(head)
    if 200 <= status < 300:
        return Answer("delivered", status, fields)
    if status == 429 or status >= 500:
        return Answer("retry", status, fields, retry_after=retry_after(headers))
    return Answer("dead", status, fields)


def retry_after(headers: httpx.Headers) -> float | None:
    """Retry-After as seconds or an HTTP date; None when absent or unreadable (`nan` included).
    It may be huge (`1e30`, `inf`): how long is too long is delivery's to clamp."""
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return None if math.isnan(seconds) else max(0.0, seconds)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
