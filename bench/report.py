"""The results table: metric, ours, yardstick, ratio, target, met?"""

from __future__ import annotations

from dataclasses import dataclass

HEADER = ("metric", "ours", "yardstick", "ratio", "target", "met?")


@dataclass
class Row:
    metric: str
    ours: str
    yardstick: str = "—"
    ratio: str = "—"
    target: str = "—"
    met: bool | None = None

    def cells(self) -> tuple[str, ...]:
        met = "—" if self.met is None else ("yes" if self.met else "**no**")
        return (self.metric, self.ours, self.yardstick, self.ratio, self.target, met)


def table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def ms(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1f} ms" if value < 100 else f"{value:,.0f} ms"


def ratio_of(ours: float | None, yardstick: float | None) -> float | None:
    if not ours or not yardstick:
        return None
    return ours / yardstick


def ratio(ours: float | None, yardstick: float | None) -> str:
    value = ratio_of(ours, yardstick)
    return "n/a" if value is None else f"{value:.2f}x"
