"""A Segment-like Tracking API for the outbound phases, in its own process.

POST /v1/batch checks HTTP Basic auth (a known write key as user name, empty password),
refuses bodies over 500 KB and messages over 32 KB as Segment does, and records every
accepted message: counts per write key, and per messageId the time it was first received.
A messageId's tag is its text before the first ':' (the bench's phases use `tag:run:n`).

GET /stats  -> {"requests", "refused", "keys": {key: {messages, unique, last}},
                "tags": {tag: {messages, unique, first, last}}}   (times: epoch seconds)
GET /times?tag=T -> {messageId: epoch seconds of first receipt} for that tag (default `lat`,
                    the latency phase)

With `--hang-seconds S`, every POST /v1/batch waits S seconds and then answers 503: a Segment
that hangs (the isolation phase's, past the worker's SEGMENT_TIMEOUT_SECONDS).

    python -m bench.sink_app --port 8002 --write-key K1 --write-key K2
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

MAX_BATCH_BYTES = 500 * 1024
MAX_MESSAGE_BYTES = 32 * 1024


@dataclass
class Tally:
    messages: int = 0
    unique: int = 0
    first: float | None = None
    last: float | None = None

    def add(self, new: bool, now: float) -> None:
        self.messages += 1
        if new:
            self.unique += 1
            self.first = self.first or now
            self.last = now

    def as_dict(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "unique": self.unique,
            "first": self.first,
            "last": self.last,
        }


@dataclass
class Sink:
    write_keys: frozenset[str]
    requests: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    keys: dict[str, Tally] = field(default_factory=dict)
    tags: dict[str, Tally] = field(default_factory=dict)
    first_seen: dict[str, float] = field(default_factory=dict)
    hang: float = 0.0

    def refuse(self, status: int, reason: str) -> Response:
        label = f"{status} {reason}"
        self.refused[label] = self.refused.get(label, 0) + 1
        body = orjson.dumps({"success": False, "message": reason})
        return Response(body, status, media_type="application/json")

    async def batch(self, request: Request) -> Response:
        self.requests += 1
        if self.hang:
            await asyncio.sleep(self.hang)
            return self.refuse(503, "hung")
        key = _write_key(request.headers.get("authorization", ""))
        if key is None or key not in self.write_keys:
            return self.refuse(401, "Invalid write key")
        body = await request.body()
        if len(body) > MAX_BATCH_BYTES:
            return self.refuse(400, "Exceeded payload limit")
        try:
            batch = orjson.loads(body)["batch"]
            if not isinstance(batch, list):
                raise TypeError("batch is not a list")
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return self.refuse(400, "Invalid JSON")
        for message in batch:
            if not isinstance(message, dict) or len(orjson.dumps(message)) > MAX_MESSAGE_BYTES:
                return self.refuse(400, "Exceeded message size limit")
        now = time.time()
        per_key = self.keys.setdefault(key, Tally())
        for message in batch:
            mid = str(message.get("messageId", ""))
            new = mid not in self.first_seen
            if new:
                self.first_seen[mid] = now
            per_key.add(new, now)
            self.tags.setdefault(mid.partition(":")[0] if ":" in mid else "", Tally()).add(new, now)
        return Response(b'{"success":true}', media_type="application/json")

    async def stats(self, request: Request) -> Response:
        body = {
            "requests": self.requests,
            "refused": self.refused,
            "keys": {k: t.as_dict() for k, t in self.keys.items()},
            "tags": {k: t.as_dict() for k, t in self.tags.items()},
        }
        return Response(orjson.dumps(body), media_type="application/json")

    async def times(self, request: Request) -> Response:
        prefix = request.query_params.get("tag", "lat") + ":"
        body = {m: t for m, t in self.first_seen.items() if m.startswith(prefix)}
        return Response(orjson.dumps(body), media_type="application/json")

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/batch", self.batch, methods=["POST"]),
                Route("/stats", self.stats),
                Route("/times", self.times),
            ]
        )


def _write_key(header: str) -> str | None:
    if not header.startswith("Basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user if password == "" else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--write-key", action="append", required=True, dest="write_keys")
    parser.add_argument("--hang-seconds", type=float, default=0.0)
    args = parser.parse_args()
    sink = Sink(write_keys=frozenset(args.write_keys), hang=args.hang_seconds)
    uvicorn.run(
        sink.app(),
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        server_header=False,
    )


if __name__ == "__main__":
    main()
