"""What compiling a mapping produces, and what a directive's compiler is handed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from integration.mapping.values import MISSING

# A compiled piece of a mapping: the message (or the item, inside @arrayPath) in, the value
# out, or MISSING where mapping-kit's answer is `undefined`.
Evaluate = Callable[[object], object]


class Build(Protocol):
    """One compilation: turns mapping values into evaluators and collects what is wrong."""

    def node(self, raw: object, where: str) -> Evaluate: ...

    def refuse(self, where: str, reason: str) -> None: ...


def refused(payload: object) -> object:
    """Stands in for a piece that was refused (compilation then raises, so it never runs)."""
    return MISSING


def nothing(payload: object) -> object:
    """A piece that always resolves to nothing, as mapping-kit's does (e.g. @case without a
    value)."""
    return MISSING
