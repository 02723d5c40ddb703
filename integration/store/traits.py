"""Trait merging: per key, the value from the newest message wins, whatever the arrival order.

The database applies the same rule (the `merge_traits` SQL function of the first migration);
this module folds several messages of one batch into one row before it reaches the database,
since one INSERT ... ON CONFLICT cannot touch the same row twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(slots=True)
class TraitState:
    traits: dict[str, Any] = field(default_factory=dict)
    times: dict[str, float] = field(default_factory=dict)
    first_seen: datetime | None = None
    last_seen: datetime | None = None

    def apply(self, traits: dict[str, Any] | None, at: datetime) -> None:
        epoch = at.timestamp()
        for key, value in (traits or {}).items():
            if self.times.get(key, float("-inf")) <= epoch:
                self.traits[key] = value
                self.times[key] = epoch
        self.seen(at)

    def seen(self, at: datetime) -> None:
        if self.first_seen is None or at < self.first_seen:
            self.first_seen = at
        if self.last_seen is None or at > self.last_seen:
            self.last_seen = at

    def row(self, key_name: str, key: str) -> dict[str, Any]:
        return {
            key_name: key,
            "traits": self.traits,
            "trait_times": self.times,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
        }
