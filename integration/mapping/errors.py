"""The two ways a mapping goes wrong: refused when it is defined, or failing on one message."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a definition: where (`mapping.properties.plan`) and what."""

    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


class InvalidMapping(ValueError):
    """A mapping or trigger that cannot be used (the admin API answers 422 with it).

    Every problem found is kept, so a user fixes them all in one round."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = tuple(problems)


class MappingFailed(ValueError):
    """A valid mapping that cannot be applied to one message (the message goes on unmapped,
    with this attached)."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason
