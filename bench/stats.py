"""Figures read from samples."""

from __future__ import annotations


def percentile(values: list[float], pct: float) -> float | None:
    """The nearest-rank percentile (None for no samples)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]
