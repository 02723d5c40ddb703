"""Issue #23's isolation phase: one environment's failing Segment never slows another.

The bench environment publishes at 1,000 events/s (bench/publisher.py) in short windows while a
second environment publishes at a fifth of that. In a `healthy` window the second one's Segment
is the bench's sink; in a `hung` window it is a sink that holds every request past the worker's
SEGMENT_TIMEOUT_SECONDS. The windows alternate in pairs whose order flips (healthy-hung, hung-
healthy, ...) after a warm-up window that is not counted, so drift of a shared machine and
anything one window leaves to the next weigh on both sides; each side's delays are pooled over
its windows, and its p50/p99 are read from the pool. Between windows the hung environment's
stream is off and the phase waits until no transaction of the run is older than a second (a
hung round ends at its timeout), so a window starts with nothing of the previous one in flight.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from bench import servers, targets
from bench.report import Row, ms, ratio, ratio_of
from bench.stats import percentile

HEALTHY, HUNG = "healthy", "hung"
# Where a transaction older than this is still open, a hung round is still in flight.
SETTLED_SECONDS = 1.0
OPEN_TRANSACTIONS = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
  AND xact_start < now() - make_interval(secs => $1)
"""


@dataclass(frozen=True)
class Window:
    """One window's bench-environment delays (publish sent → first receipt at the sink)."""

    mode: str
    delays_ms: list[float] = field(repr=False)
    published: int
    missing: int

    @property
    def p99_ms(self) -> float | None:
        return percentile(self.delays_ms, 99)


@dataclass(frozen=True)
class Side:
    """All windows of one mode, their delays pooled."""

    windows: list[Window]

    @property
    def delays_ms(self) -> list[float]:
        return [d for w in self.windows for d in w.delays_ms]

    @property
    def p50_ms(self) -> float | None:
        return percentile(self.delays_ms, 50)

    @property
    def p99_ms(self) -> float | None:
        return percentile(self.delays_ms, 99)

    @property
    def missing(self) -> int:
        return sum(w.missing for w in self.windows)


@dataclass(frozen=True)
class Isolation:
    windows: list[Window]

    def side(self, mode: str) -> Side:
        return Side([w for w in self.windows if w.mode == mode])

    def summary(self) -> dict[str, object]:
        """The figures, without the samples (for results/latest.json)."""
        return {
            mode: {
                "p50_ms": side.p50_ms,
                "p99_ms": side.p99_ms,
                "samples": len(side.delays_ms),
                "missing": side.missing,
                "window_p99_ms": [w.p99_ms for w in side.windows],
            }
            for mode, side in ((HEALTHY, self.side(HEALTHY)), (HUNG, self.side(HUNG)))
        } | {"order": [w.mode for w in self.windows], "pair_p99_ratios": self.pair_ratios()}

    def pair_ratios(self) -> list[float]:
        """Each pair's hung p99 over its healthy p99: how much one pair alone can say."""
        out = []
        for i in range(0, len(self.windows) - 1, 2):
            pair = {w.mode: w.p99_ms for w in self.windows[i : i + 2]}
            if (hung := pair.get(HUNG)) and (ok := pair.get(HEALTHY)):
                out.append(hung / ok)
        return out


def met(result: Isolation) -> bool:
    """Issue #23: p50 and p99 within ISOLATION_RATIO of the healthy side's, nothing lost."""
    ok, hung = result.side(HEALTHY), result.side(HUNG)
    target = targets.ISOLATION_RATIO
    return (
        target.at_most(ratio_of(hung.p50_ms, ok.p50_ms))
        and target.at_most(ratio_of(hung.p99_ms, ok.p99_ms))
        and hung.missing == 0
    )


def rows(result: Isolation, events_per_s: int) -> list[Row]:
    ok, hung = result.side(HEALTHY), result.side(HUNG)
    windows = len(hung.windows)
    return [
        Row(
            f"outbound isolation: publish → delivered p50 / p99 at {events_per_s:,} events/s while"
            " another environment's Segment hangs every request (yardstick: the same, its Segment"
            f" healthy; {windows} windows each, interleaved, delays pooled)",
            f"{ms(hung.p50_ms)} / {ms(hung.p99_ms)}",
            f"{ms(ok.p50_ms)} / {ms(ok.p99_ms)}",
            f"{ratio(hung.p50_ms, ok.p50_ms)} / {ratio(hung.p99_ms, ok.p99_ms)}",
            targets.ISOLATION_RATIO.text,
            met(result),
        )
    ]


def details(result: Isolation) -> str:
    ok, hung = result.side(HEALTHY), result.side(HUNG)
    order = ", ".join(f"{w.mode} p99 {ms(w.p99_ms)}" for w in result.windows)
    pairs = ", ".join(f"{r:.2f}x" for r in result.pair_ratios())
    return (
        f"Isolation: windows in order: {order}. Each pair's p99 ratio: {pairs or 'n/a'}."
        f" Samples: {len(hung.delays_ms):,} hung, {len(ok.delays_ms):,} healthy;"
        f" missing {hung.missing} hung, {ok.missing} healthy."
    )


class Switch(Protocol):
    """What the phase needs of a run: its environments' settings, and a measured window."""

    def set_stream(self, env: str, url: str | None) -> None: ...

    def publish_window(self, mode: str, index: int) -> Window: ...


def interleaved(pairs: int) -> list[str]:
    """healthy, hung, hung, healthy, healthy, hung, ...: each order as often as the other."""
    out: list[str] = []
    for i in range(pairs):
        out += [HEALTHY, HUNG] if i % 2 == 0 else [HUNG, HEALTHY]
    return out


def measure(
    switch: Switch,
    *,
    pairs: int,
    hung_url: str,
    settle: Callable[[], None],
    say: Callable[[str], None],
) -> Isolation:
    # A first window, not counted: the first one after the worker starts (or after other
    # phases) runs slower, and counted it would always favour the side that comes first.
    say("isolation: a warm-up window, not counted")
    switch.publish_window(HEALTHY, 0)
    settle()
    windows: list[Window] = []
    for index, mode in enumerate(interleaved(pairs), start=1):
        switch.set_stream("bench-hung", hung_url if mode == HUNG else None)
        say(f"isolation window {index}/{2 * pairs}: the other environment's Segment {mode}")
        windows.append(switch.publish_window(mode, index))
        if mode == HUNG:
            switch.set_stream("bench-hung", None)
        settle()
    return Isolation(windows)


def settle(db_url: str, *, timeout: float) -> None:
    """Wait until no transaction of the run's database has been open for over a second."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if int(servers.query(db_url, OPEN_TRANSACTIONS, SETTLED_SECONDS)) == 0:
            return
        time.sleep(0.2)
