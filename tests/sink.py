"""A local HTTP server that behaves like Segment's Tracking API batch endpoint.

It checks HTTP Basic auth (write key as user name, empty password) against the keys it was
given, refuses bodies over 500 KB and messages over 32 KB as Segment does, answers 200 to a
batch of more than 2,500 events and drops it, as Segment does (counted in `silently_dropped`),
records what it accepts and the `sentAt` of every request, and can be told to answer 500, 429
with Retry-After, 400, or hang.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from integration.embedded import free_port

MAX_BATCH_BYTES = 500 * 1024
MAX_MESSAGE_BYTES = 32 * 1024
MAX_BATCH_EVENTS = 2500


@dataclass
class Received:
    write_key: str
    message: dict[str, Any]


@dataclass
class Fault:
    status: int
    retry_after: str | None = None
    hang: float = 0.0
    message: str | None = None  # Segment's `message` field in the answer, when given


@dataclass
class SegmentSink:
    write_keys: set[str] = field(default_factory=set)
    received: list[Received] = field(default_factory=list)
    requests: int = 0
    refused: list[tuple[int, str]] = field(default_factory=list)
    faults: deque[Fault] = field(default_factory=deque)
    in_flight: int = 0
    port: int = 0
    silently_dropped: int = 0
    # (arrival time, the envelope's sentAt, the status answered) of every readable request
    sent_ats: list[tuple[float, str | None, int]] = field(default_factory=list)

    # --- control -------------------------------------------------------------------------
    def fail(
        self,
        status: int,
        times: int = 1,
        *,
        retry_after: str | None = None,
        message: str | None = None,
    ) -> None:
        for _ in range(times):
            self.faults.append(Fault(status, retry_after, message=message))

    def hang(self, seconds: float, times: int = 1) -> None:
        for _ in range(times):
            self.faults.append(Fault(200, hang=seconds))

    def message_ids(self, write_key: str | None = None) -> list[str]:
        return [
            r.message["messageId"]
            for r in self.received
            if write_key is None or r.write_key == write_key
        ]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- server --------------------------------------------------------------------------
    async def batch(self, request: Request) -> JSONResponse:
        self.requests += 1
        self.in_flight += 1
        try:
            return await self._batch(request)
        finally:
            self.in_flight -= 1

    async def _batch(self, request: Request) -> JSONResponse:
        key = _write_key(request.headers.get("authorization", ""))
        if key is None or key not in self.write_keys:
            return self._refuse(401, "Invalid write key")
        body = await request.body()
        if len(body) > MAX_BATCH_BYTES:
            return self._refuse(400, "Exceeded payload limit")
        response = await self._answer(key, body)
        self.sent_ats.append((time.time(), _sent_at(body), response.status_code))
        return response

    async def _answer(self, key: str, body: bytes) -> JSONResponse:
        if self.faults:
            fault = self.faults.popleft()
            if fault.hang:
                await asyncio.sleep(fault.hang)
            elif fault.status != 200:
                headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
                self.refused.append((fault.status, "fault"))
                answer = {"success": False} | ({"message": fault.message} if fault.message else {})
                return JSONResponse(answer, fault.status, headers=headers)
        try:
            batch = json.loads(body)["batch"]
        except (ValueError, KeyError, TypeError):
            return self._refuse(400, "Invalid JSON")
        for message in batch:
            if len(json.dumps(message, separators=(",", ":"))) > MAX_MESSAGE_BYTES:
                return self._refuse(400, "Exceeded message size limit")
        if len(batch) > MAX_BATCH_EVENTS:
            self.silently_dropped += len(batch)
            return JSONResponse({"success": True})
        self.received.extend(Received(key, m) for m in batch)
        return JSONResponse({"success": True})

    def _refuse(self, status: int, reason: str) -> JSONResponse:
        self.refused.append((status, reason))
        return JSONResponse({"success": False, "message": reason}, status)

    def start(self) -> SegmentSink:
        self.port = free_port()
        app = Starlette(routes=[Route("/v1/batch", self.batch, methods=["POST"])])
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("sink did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)


def _write_key(header: str) -> str | None:
    if not header.startswith("Basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    except ValueError:
        return None
    return user if password == "" else None


def _sent_at(body: bytes) -> str | None:
    try:
        value = json.loads(body).get("sentAt")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None
