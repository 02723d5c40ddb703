"""What compiling a mapping produces, and what a directive's compiler is handed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

# A compiled piece of a mapping: the message (or the item, inside @arrayPath) in, the value
# out, or MISSING where mapping-kit's answer is `undefined`.
Evaluate = Callable[[object], object]


class Build(Protocol):
    """One compilation: turns mapping values into evaluators and collects what is wrong."""

    def node(self, raw: object, where: str) -> Evaluate: ...

    def refuse(self, where: str, reason: str) -> None: ...
