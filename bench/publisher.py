"""Our outbound side, driven from outside: product events published over HTTP
(`POST /api/environments/{id}/product-events`, Bearer ADMIN_TOKEN) by a separate process.

    python -m bench.publisher throughput --base URL --env ID --token T --n 50000 --tag ob:run1
    python -m bench.publisher latency --base URL --env ID --token T --seconds 15 --tag lat:run1 \
        --out times.json

`throughput` sends N track events in lists of `--per-request` with a few requests in flight
and prints when the first request started and what the API accepted. `latency` publishes
`--per-tick` events every `--tick-ms` (1,000 events/s by default) for `--seconds`, writes
{messageId: publish time} to `--out` and prints a summary. Times are epoch seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench import payloads


def _client(args: argparse.Namespace, connections: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=args.base,
        headers={"Authorization": f"Bearer {args.token}", "Content-Type": "application/json"},
        timeout=60,
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    )


def _path(args: argparse.Namespace) -> str:
    return f"/api/environments/{args.env}/product-events"


async def _post(
    client: httpx.AsyncClient,
    path: str,
    body: bytes,
    retried: dict[str, int],
    on_202: Callable[[httpx.Response], None] | None = None,
) -> str:
    """POST, retrying a network error twice as any client would (messageIds make a retry safe:
    the API dedupes them). Returns the final status code, or the error's name."""
    for attempt in range(3):
        try:
            response = await client.post(path, content=body)
        except httpx.TransportError as exc:
            name = type(exc).__name__
            retried[name] = retried.get(name, 0) + 1
            if attempt == 2:
                return name
            continue
        if response.status_code == 202 and on_202 is not None:
            on_202(response)
        return str(response.status_code)
    raise AssertionError("unreachable")


async def throughput(args: argparse.Namespace) -> dict[str, Any]:
    bodies: list[bytes] = []
    for start in range(0, args.n, args.per_request):
        stop = min(start + args.per_request, args.n)
        bodies.append(
            orjson.dumps([payloads.track(f"{args.tag}:{n}", n) for n in range(start, stop)])
        )
    pending = list(reversed(bodies))
    queued = 0
    failures: dict[str, int] = {}
    retried: dict[str, int] = {}

    def count(response: httpx.Response) -> None:
        nonlocal queued
        queued += int(response.json()["queued"])

    async def sender(client: httpx.AsyncClient) -> None:
        while pending:
            body = pending.pop()
            status = await _post(client, _path(args), body, retried, on_202=count)
            if status != "202":
                failures[status] = failures.get(status, 0) + 1

    async with _client(args, args.concurrency) as client:
        t0 = time.time()
        await asyncio.gather(*(sender(client) for _ in range(args.concurrency)))
        t_end = time.time()
    return {
        "t0": t0,
        "t_end": t_end,
        "requests": len(bodies),
        "queued": queued,
        "failures": failures,
        "retried": retried,
    }


async def latency(args: argparse.Namespace) -> dict[str, Any]:
    """`--per-tick` events every `--tick-ms`, each tick one request, at most `--max-in-flight`
    requests at once. A tick whose request cannot start within `--seconds` after its scheduled
    time (the API is not keeping up) is skipped, so the phase stays bounded."""
    scheduled: dict[str, float] = {}  # when the schedule said to publish
    published: dict[str, float] = {}  # when the publish request was sent
    acked: dict[str, float] = {}  # when its 202 came back
    retried: dict[str, int] = {}
    failures: dict[str, int] = {}
    skipped = 0
    in_flight = asyncio.Semaphore(args.max_in_flight)
    tasks: set[asyncio.Task[None]] = set()
    late_ticks = 0

    async def publish(client: httpx.AsyncClient, ids: list[str], first: int, due: float) -> None:
        nonlocal skipped
        body = orjson.dumps([payloads.track(mid, first + i) for i, mid in enumerate(ids)])
        try:
            await asyncio.wait_for(in_flight.acquire(), timeout=max(0.0, due - time.time()))
        except TimeoutError:
            skipped += len(ids)
            return
        try:
            sent = time.time()
            for mid in ids:
                published[mid] = sent
            status = await _post(client, _path(args), body, retried)
            done = time.time()
        finally:
            in_flight.release()
        if status == "202":
            for mid in ids:
                acked[mid] = done
        else:
            failures[status] = failures.get(status, 0) + 1

    tick = args.tick_ms / 1000
    ticks = int(args.seconds / tick)
    async with _client(args, args.max_in_flight) as client:
        start = time.monotonic()
        t0 = time.time()
        for k in range(ticks):
            wait = start + k * tick - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -tick:
                late_ticks += 1
            first = k * args.per_tick
            ids = [f"{args.tag}:{first + i}" for i in range(args.per_tick)]
            for mid in ids:
                scheduled[mid] = t0 + k * tick
            due = t0 + k * tick + args.seconds
            task = asyncio.create_task(publish(client, ids, first, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        t_last_tick = time.time()
        if tasks:
            await asyncio.wait(tasks, timeout=args.seconds + 60)
        t_end = time.time()
    sends = sorted(set(published.values()))
    return {
        "times": {"scheduled": scheduled, "published": published, "acked": acked},
        "t0": t0,
        "t_last_tick": t_last_tick,
        "t_end": t_end,
        "scheduled": len(scheduled),
        "published": len(published),
        "acked": len(acked),
        "skipped": skipped,
        "send_span": sends[-1] - sends[0] if len(sends) > 1 else 0.0,
        "late_ticks": late_ticks,
        "failures": failures,
        "retried": retried,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["throughput", "latency"])
    parser.add_argument("--base", required=True)
    parser.add_argument("--env", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--tag", required=True, help="messageId prefix, e.g. ob:run1")
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--per-request", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--tick-ms", type=float, default=10)
    parser.add_argument("--per-tick", type=int, default=10)
    parser.add_argument("--max-in-flight", type=int, default=32)
    parser.add_argument("--out", default="latency-published.json")
    args = parser.parse_args()
    run = throughput if args.mode == "throughput" else latency
    result = asyncio.run(run(args))
    if "times" in result:
        Path(args.out).write_bytes(orjson.dumps(result.pop("times")))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
