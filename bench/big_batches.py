"""Webhooks (Actions) at its largest: requests of 4,000 events (~1 KB each, ~4 MB), sent one
after another as Segment sends them (PUT, X-Signature over the first event), each timed from
the first byte sent to the answer. Segment gives up on a request after 10 s.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from dataclasses import dataclass

import httpx
import orjson

from bench import payloads

EVENTS_PER_REQUEST = 4000


@dataclass
class BigBatches:
    seconds: list[float]
    statuses: list[int]
    body_bytes: int
    events: int


def body(run_tag: str, request: int) -> list[bytes]:
    """The events of one request, each encoded compactly as JSON.stringify would."""
    stamp = payloads.now_iso()
    return [
        orjson.dumps(payloads.track(f"{run_tag}-{request}-{i}-{uuid.uuid4().hex[:8]}", i, stamp))
        for i in range(EVENTS_PER_REQUEST)
    ]


def send(url: str, secret: str, requests: int, run_tag: str) -> BigBatches:
    out = BigBatches([], [], 0, 0)
    with httpx.Client(timeout=30) as client:
        for n in range(requests + 1):  # the first warms up and is not counted
            events = body(run_tag, n)
            content = b"[" + b",".join(events) + b"]"
            signature = hmac.new(secret.encode(), events[0], hashlib.sha1).hexdigest()
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "Segment (Actions)",
                "X-Signature": signature,
            }
            started = time.perf_counter()
            response = client.put(url, content=content, headers=headers)
            elapsed = time.perf_counter() - started
            if n == 0:
                continue
            out.seconds.append(elapsed)
            out.statuses.append(response.status_code)
            out.body_bytes = len(content)
            out.events += EVENTS_PER_REQUEST if response.status_code == 200 else 0
    return out
