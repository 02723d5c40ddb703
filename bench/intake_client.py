"""Segment's own Python library, `segment-analytics-python`, used as its docs say
(`Client(write_key, host=...)`, `track()`, `flush()`), against any Tracking API: our /v1 intake,
or the Segment-like sink directly (the yardstick). Only `max_queue_size` differs from the
defaults: it is made large enough that the library drops nothing (its default, 10,000, drops
what overflows a fast caller), so both sides deliver every event; and, with `--threads`, the
number of consumer threads (one by default, which sends one batch at a time).

    python -m bench.intake_client throughput --host URL --write-key K --n 20000 --tag ipo:run1
    python -m bench.intake_client latency --host URL --write-key K --seconds 15 --tag ilo:run1 \
        --out times.json

`throughput` calls track() N times as fast as it can, then flush(). `latency` calls track()
`--per-tick` times every `--tick-ms` (1,000 events/s by default) for `--seconds`, then flush(),
and writes {messageId: time of its track() call} to `--out`. Each prints one JSON line; times
are epoch seconds. messageIds are `{tag}:{n}`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from segment.analytics import Client

from bench import payloads

QUEUE_ROOM = 1_000_000


def _track(client: Client, message_id: str, n: int) -> bool:
    message = payloads.track(message_id, n)
    ok, _ = client.track(
        user_id=message["userId"],
        event=message["event"],
        properties=message["properties"],
        context=message["context"],
        anonymous_id=message["anonymousId"],
        message_id=message_id,
    )
    return bool(ok)


def throughput(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    accepted = 0
    t0 = time.time()
    for n in range(args.n):
        accepted += _track(client, f"{args.tag}:{n}", n)
    t_tracked = time.time()
    client.flush()
    return {"t0": t0, "t_tracked": t_tracked, "t_flushed": time.time(), "accepted": accepted}


def latency(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    """A steady rate: each tick's calls at their scheduled time (late ticks are counted, not
    skipped: the library's queue takes whatever it is given)."""
    called: dict[str, float] = {}
    tick = args.tick_ms / 1000
    ticks = int(args.seconds / tick)
    late = 0
    start = time.monotonic()
    t0 = time.time()
    for k in range(ticks):
        wait = start + k * tick - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        elif wait < -tick:
            late += 1
        for i in range(args.per_tick):
            n = k * args.per_tick + i
            message_id = f"{args.tag}:{n}"
            called[message_id] = time.time()
            _track(client, message_id, n)
    t_last = time.time()
    client.flush()
    Path(args.out).write_bytes(orjson.dumps(called))
    return {
        "t0": t0,
        "t_last_call": t_last,
        "t_flushed": time.time(),
        "called": len(called),
        "rate": len(called) / (t_last - t0) if t_last > t0 else None,
        "late_ticks": late,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["throughput", "latency"])
    parser.add_argument("--host", required=True)
    parser.add_argument("--write-key", required=True)
    parser.add_argument("--tag", required=True, help="messageId prefix, e.g. ipo:run1")
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--tick-ms", type=float, default=10)
    parser.add_argument("--per-tick", type=int, default=10)
    parser.add_argument("--out", default="intake-latency.json")
    parser.add_argument(
        "--threads", type=int, default=1, help="the library's consumer threads (default 1)"
    )
    args = parser.parse_args()
    client = Client(args.write_key, host=args.host, max_queue_size=QUEUE_ROOM, thread=args.threads)
    try:
        result = (throughput if args.mode == "throughput" else latency)(client, args)
    finally:
        client.shutdown()
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
