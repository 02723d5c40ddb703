"""A plan drafted from messages seen, for a person to edit: each event by type and name, each
property with the JSON types it was seen with, required when every sample carried it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from integration.plans.check import json_type
from integration.plans.document import MAX_NAME_CHARS, MAX_PROPERTIES, NAMED_TYPES, PlanDocument


@dataclass(slots=True)
class _Seen:
    count: int = 0
    keys: dict[str, set[str]] = field(default_factory=dict)  # property -> JSON types
    present: dict[str, int] = field(default_factory=dict)  # property -> samples carrying it

    def add(self, values: Mapping[str, Any]) -> None:
        self.count += 1
        for key, value in values.items():
            if not _plannable(key) or (key not in self.keys and len(self.keys) >= MAX_PROPERTIES):
                continue
            self.keys.setdefault(key, set()).add(json_type(value))
            self.present[key] = self.present.get(key, 0) + 1

    def entry(self, kind: str, name: str | None) -> dict[str, Any]:
        properties = {
            key: {"type": types.pop() if len(types) == 1 else sorted(types)}
            for key, types in sorted(self.keys.items())
        }
        out: dict[str, Any] = {"type": kind}
        if name is not None:
            out["name"] = name
        out["properties"] = properties
        out["required"] = sorted(k for k, n in self.present.items() if n == self.count)
        return out


def _plannable(key: str) -> bool:
    """A key a plan can name (document.Text): what cannot be named is left for the person."""
    return 0 < len(key) <= MAX_NAME_CHARS and "\x00" not in key


def draft(samples: Iterable[tuple[str, str | None, Mapping[str, Any] | None]]) -> dict[str, Any]:
    """The plan document for samples of (type, name, properties or traits). Types a plan does
    not describe (alias, unknown ones) are left out; so is a page or screen's name when absent."""
    seen: dict[tuple[str, str | None], _Seen] = {}
    for kind, name, values in samples:
        if kind not in NAMED_TYPES and kind not in ("identify", "group"):
            continue
        if kind == "track" and not name:
            continue
        key = (kind, name if kind in NAMED_TYPES else None)
        seen.setdefault(key, _Seen()).add(values or {})
    events = [s.entry(k, n) for (k, n), s in sorted(seen.items(), key=_order)]
    # What a person will edit must be a plan this product accepts as it stands.
    return PlanDocument.model_validate({"events": events}).model_dump(
        mode="json", exclude_none=True, exclude_defaults=False
    )


def _order(item: tuple[tuple[str, str | None], _Seen]) -> tuple[str, str]:
    (kind, name), _ = item
    return kind, name or ""
