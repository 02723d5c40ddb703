"""A Segment-like webhook sender: relays messages to the real server the way Segment's Webhooks
destinations do, and keeps Segment's retry rules. (segmentio/action-destinations, `webhook`;
Segment's docs for the classic Webhooks destination.)

- Actions mode (Webhooks (Actions) with batching): JSON arrays of up to `batch_size` events
  (Segment allows up to 4,000), `X-Signature` = hex HMAC-SHA1 of `JSON.stringify(batch[0])` (the
  first event only), `User-Agent: Segment (Actions)`, the method the user picked (POST, PUT or
  PATCH), a 10 s timeout.
- Classic mode: one message per request, signed over the whole body, `User-Agent:
  Segment.io/1.0`, always POST, a 5 s timeout.
- Retries: a timeout, 408, 423, 429 and 5xx are retried (with a short backoff here, hours at
  Segment); any other 4xx is dropped for good, and counted in `dropped`.

Bodies are produced as `JSON.stringify` would (`js_stringify`), so signatures are byte-exact.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

import httpx

RETRIED = {408, 423, 429}
Mode = Literal["actions", "classic"]


def js_number(value: float) -> str:
    """ECMAScript's Number::toString for a finite number, as JSON.stringify writes numbers."""
    if value == 0:
        return "0"
    if value < 0:
        return "-" + js_number(-value)
    # repr is the shortest text that reads back as the same double, as JavaScript's is.
    parts = Decimal(repr(value)).normalize().as_tuple()
    digits = "".join(map(str, parts.digits))
    k = len(digits)
    n = int(parts.exponent) + k  # value = 0.digits x 10^n
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return "0." + "0" * (-n) + digits
    exponent = f"{'+' if n > 0 else '-'}{abs(n - 1)}"
    return digits[0] + ("." + digits[1:] if k > 1 else "") + "e" + exponent


def js_stringify(value: Any) -> bytes:
    """`JSON.stringify(value)` as UTF-8: compact, non-ASCII unescaped, numbers as JavaScript
    writes them."""
    return _js(value).encode("utf-8")


def _js(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53:
        return js_number(float(value))  # JavaScript numbers are doubles
    if value is None or isinstance(value, bool | str | int):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        return js_number(value) if math.isfinite(value) else "null"
    if isinstance(value, dict):
        items = (json.dumps(str(k), ensure_ascii=False) + ":" + _js(v) for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_js(v) for v in value) + "]"
    raise TypeError(f"not JSON: {type(value).__name__}")


def sign(secret: str, data: bytes) -> str:
    return hmac.new(secret.encode(), data, hashlib.sha1).hexdigest()


@dataclass
class Attempt:
    status: int | None  # None: a timeout or a network error
    body: Any


@dataclass
class SegmentSender:
    """Relays messages to a webhook URL as Segment does; `results` has the final answer of each
    request, `dropped` the messages Segment would have thrown away."""

    client: httpx.AsyncClient
    url: str
    mode: Mode = "actions"
    method: str = "POST"
    secret: str | None = None
    batch_size: int = 1000
    attempts: int = 5
    backoff: float = 0.2
    results: list[Attempt] = field(default_factory=list)
    dropped: list[dict[str, Any]] = field(default_factory=list)
    retries: int = 0

    async def send(self, messages: list[dict[str, Any]]) -> list[Attempt]:
        """Send every message; returns the final answer of each request."""
        start = len(self.results)
        for chunk in self._requests(messages):
            self.results.append(await self._deliver(chunk))
        return self.results[start:]

    def _requests(self, messages: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        size = self.batch_size if self.mode == "actions" else 1
        return [messages[i : i + size] for i in range(0, len(messages), size)]

    def request(self, chunk: list[dict[str, Any]]) -> tuple[str, bytes, dict[str, str]]:
        """Method, body and headers of the request Segment would make for these messages."""
        if self.mode == "classic":
            body = js_stringify(chunk[0])
            headers = {"User-Agent": "Segment.io/1.0", "Content-Type": "application/json"}
            signed, method = body, "POST"
        else:
            body = js_stringify(chunk)
            headers = {"User-Agent": "Segment (Actions)", "Content-Type": "application/json"}
            signed, method = js_stringify(chunk[0]), self.method
        if self.secret:
            headers["X-Signature"] = sign(self.secret, signed)
        return method, body, headers

    async def _deliver(self, chunk: list[dict[str, Any]]) -> Attempt:
        method, body, headers = self.request(chunk)
        timeout = 10.0 if self.mode == "actions" else 5.0
        attempt = Attempt(None, None)
        for n in range(self.attempts):
            try:
                response = await self.client.request(
                    method, self.url, content=body, headers=headers, timeout=timeout
                )
                attempt = Attempt(response.status_code, _json(response))
            except httpx.HTTPError:
                attempt = Attempt(None, None)
            if not _retried(attempt.status):
                break
            self.retries += 1
            await asyncio.sleep(self.backoff * 2**n)
        if (
            attempt.status is not None
            and 400 <= attempt.status < 500
            and not _retried(attempt.status)
        ):
            self.dropped.extend(chunk)
        return attempt


def _retried(status: int | None) -> bool:
    return status is None or status in RETRIED or status >= 500


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text
