"""Inbound and outbound events per minute over the last 24 hours, drawn by the server as inline
SVG: no charting library, no script, and it prints and scales with the page."""

from __future__ import annotations

from datetime import datetime, timedelta

from markupsafe import Markup, escape

MINUTES = 24 * 60
WIDTH, HEIGHT = 960, 180
TOP, BOTTOM, LEFT = 12, 22, 40
SERIES = (("inbound", "#2563eb"), ("outbound", "#d97706"))


def _nice(peak: int) -> int:
    """A round top for the y axis: 1, 2 or 5 times a power of ten, at least the peak."""
    scale = 1
    while True:
        for step in (1, 2, 5):
            if step * scale >= peak:
                return step * scale
        scale *= 10


def _points(counts: list[int], top: int) -> str:
    plot_w, plot_h = WIDTH - LEFT, HEIGHT - TOP - BOTTOM
    return " ".join(
        f"{LEFT + plot_w * i / (MINUTES - 1):.1f},{TOP + plot_h * (1 - n / top):.1f}"
        for i, n in enumerate(counts)
    )


def series(per_minute: dict[datetime, int], start: datetime) -> list[int]:
    """Counts for each of the MINUTES minutes from `start` (a whole minute), zeros filled in."""
    return [per_minute.get(start + timedelta(minutes=i), 0) for i in range(MINUTES)]


def svg(inbound: list[int], outbound: list[int], start: datetime) -> Markup:
    top = _nice(max([*inbound, *outbound, 1]))
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="events per minute, last 24 hours; peak {top}">',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{WIDTH}" y2="{TOP}" stroke="#e5e7eb"/>',
        f'<line x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH}" y2="{HEIGHT - BOTTOM}" '
        'stroke="#9ca3af"/>',
        f'<text x="{LEFT - 6}" y="{TOP + 4}" text-anchor="end">{top}</text>',
        f'<text x="{LEFT - 6}" y="{HEIGHT - BOTTOM + 4}" text-anchor="end">0</text>',
    ]
    for hours in range(0, 25, 3):
        x = LEFT + (WIDTH - LEFT) * min(hours * 60, MINUTES - 1) / (MINUTES - 1)
        label = "now" if hours == 24 else (start + timedelta(hours=hours)).strftime("%H:%M")
        # The last label ends at the right edge, so it is not cut in half.
        anchor = "end" if hours == 24 else "middle"
        parts.append(
            f'<text x="{x:.1f}" y="{HEIGHT - 6}" text-anchor="{anchor}">{escape(label)}</text>'
        )
    for (name, colour), counts in zip(SERIES, (inbound, outbound), strict=True):
        parts.append(
            f'<polyline class="{name}" fill="none" stroke="{colour}" stroke-width="1.5" '
            f'points="{_points(counts, top)}"/>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))
