"""The outbound yardstick: Segment's own Python library, `segment-analytics-python`, with its
default settings (host and write key aside), sending N track events of the bench's shape as
fast as the caller can, then `analytics.flush()`.

Prints one JSON line: when the first track() was called, how many track() calls the library
accepted into its in-memory queue (it drops events when the queue is full), and when flush()
returned.

    python -m bench.peer --host http://127.0.0.1:8002 --write-key K --n 50000 --tag peer:run1
"""

from __future__ import annotations

import argparse
import sys
import time

import orjson
from segment import analytics

from bench import payloads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", required=True)
    parser.add_argument("--write-key", required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--tag", required=True, help="messageId prefix, e.g. peer:run1")
    args = parser.parse_args()

    analytics.write_key = args.write_key
    analytics.host = args.host
    accepted = 0
    t0 = time.time()
    for n in range(args.n):
        message = payloads.track(f"{args.tag}:{n}", n)
        ok, _ = analytics.track(
            user_id=message["userId"],
            event=message["event"],
            properties=message["properties"],
            context=message["context"],
            anonymous_id=message["anonymousId"],
            message_id=message["messageId"],
        )
        accepted += bool(ok)
    t_tracked = time.time()
    analytics.flush()
    t_flushed = time.time()
    analytics.shutdown()
    out = {"t0": t0, "t_tracked": t_tracked, "t_flushed": t_flushed, "accepted": accepted}
    sys.stdout.write(orjson.dumps(out).decode() + "\n")


if __name__ == "__main__":
    main()
