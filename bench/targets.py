"""Every target of `make bench`, defined once: the report's target cell and its met? check read
these, and bench/README.md's table of phases is written from them (bench/phases.py;
tests/test_bench_readme.py fails when the README says otherwise).

No imports beyond the standard library: the test reads this without the bench's dependencies.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    """A bound on one figure: `figure` names it (the README's table), `text` is the bound as
    the report's target cell shows it, `bound` the number both the text and the check use."""

    figure: str
    text: str
    bound: float

    def at_most(self, value: float | None, scale: float = 1.0) -> bool:
        """Met when `value` is at most the bound (times `scale`, a yardstick)."""
        return value is not None and value <= self.bound * scale

    def at_least(self, value: float | None, scale: float = 1.0) -> bool:
        """Met when `value` is at least the bound (times `scale`, a yardstick)."""
        return value is not None and value >= self.bound * scale

    def below(self, value: float | None) -> bool:
        """Met when `value` is under the bound."""
        return value is not None and value < self.bound

    def readme(self) -> str:
        return f"{self.figure}: {self.text}"


SINGLE_VS_BARE = Target(
    "single-message requests/s against the bare endpoint's (the mean of phases 1 and 5)",
    "≥ 0.5x bare",
    0.5,
)
SERVER_RSS_MB = Target("server peak RSS", "≤ 200 MB", 200)
# Batches: at least this many events/s, or this share of the Postgres floor, whichever is lower
# (a slow machine's floor may itself be below the absolute figure).
BATCH_EVENTS_PER_S = Target(
    "batched events/s committed", "≥ 25,000 or ≥ 0.7x floor, the lower", 25_000
)
BATCH_VS_FLOOR = 0.7
PACED_P99_MS = Target("p99 at half of ours' peak", "p99 ≤ 50 ms", 50)
BIG_BATCH_P99_S = Target(
    "time to answer a 4,000-event request",
    "p99 well inside Segment's 10 s (≤ 4 s); all 2xx, all stored",
    4,
)
PUBLISH_P99_MS = Target("publish → sink receipt", "p99 ≤ 2 s at 1,000/s", 2000)
ISOLATION_RATIO = Target(
    "the healthy environment's publish → delivered p50 and p99, another's Segment hung against"
    " healthy",
    "p50 and p99 ≤ 1.25x; none missing",
    1.25,
)
INTAKE_VS_DIRECT = Target(
    "intake events/s against the same library straight to the sink", "≥ 0.8x direct", 0.8
)
INTAKE_P99_MS = Target("track() → sink receipt through us", "p99 < 2 s", 2000)
MAPPING_US = Target("a 10-field mapping and its trigger, CPU per event", "≤ 10 µs per event", 10)
IDENTITY_GUARDS = Target(
    "identify/alias-heavy batches (30% identify, 5% alias): messages/s with issue #25's identity"
    " guards against the path before them",
    "≥ 0.9x (the guards cost under 10%)",
    0.9,
)
