"""A plan compiled once into lookups and compiled patterns, and the verdict on one message.

The verdict says what to store (inbound) or send (outbound) now, whether the message is kept
whole in quarantine, and every violation. What is done with a message that does not fit:
- an unplanned event (a track, page or screen the plan does not list): `allow` passes it;
  `quarantine` holds it whole (neither stored nor sent until released);
- an unplanned property, or one that breaks its rule (type, enum, pattern), or a required one
  missing: `keep` passes the message whole; `quarantine` keeps it whole in quarantine and,
  inbound, stores it at once without the properties at fault (Segment's copy of the rest is not
  held back; releasing restores them), while outbound it is held whole: a message is sent to
  Segment once, so it is not sent until it is released.
Messages of other types (alias, unknown ones), and identify or group calls the plan has no
entry for, are not checked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from integration.plans.document import NAMED_TYPES, EventPlan, PlanDocument, Settings
from integration.plans.patterns import MAX_SUBJECT_CHARS, compile_pattern, matches

SAMPLE_CHARS = 100


@dataclass(frozen=True, slots=True)
class Violation:
    event: str  # the event's name, else its type
    property: str | None  # None: the event itself
    rule: str  # unplanned_event, unplanned_property, type, enum, pattern, required
    detail: str
    sample: Any = None  # the value at fault, cut short

    def as_dict(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "property": self.property,
            "rule": self.rule,
            "detail": self.detail,
            "sample": self.sample,
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """`message`: what to store or send now (the one given when nothing is removed), None when
    it is held whole in quarantine. `quarantine`: keep the original whole in quarantine."""

    message: Mapping[str, Any] | None
    quarantine: bool
    violations: tuple[Violation, ...]

    @property
    def held(self) -> bool:
        return self.message is None


@dataclass(frozen=True, slots=True)
class _Rule:
    types: frozenset[str]
    enum: tuple[Any, ...] | None
    pattern: re.Pattern[str] | None


@dataclass(frozen=True, slots=True)
class _Event:
    rules: Mapping[str, _Rule]
    required: tuple[str, ...]


class Plan:
    """A plan compiled for one direction: built once when the plan changes, then shared."""

    def __init__(self, document: PlanDocument, settings: Settings, direction: str) -> None:
        self.settings = settings
        self.direction = direction
        self._events = {e.key(): _compile(e) for e in document.events}

    def entry(self, kind: str, name: str | None) -> _Event | None:
        """The entry for this type and name; for a page or screen, else its nameless entry."""
        found = self._events.get((kind, name))
        if found is None and name is not None and kind != "track":
            found = self._events.get((kind, None))
        return found


def _compile(entry: EventPlan) -> _Event:
    rules = {
        name: _Rule(
            frozenset(schema.types()),
            tuple(schema.enum) if schema.enum is not None else None,
            compile_pattern(schema.pattern) if schema.pattern is not None else None,
        )
        for name, schema in entry.properties.items()
    }
    return _Event(rules, tuple(entry.required))


def bag_of(kind: str) -> str:
    """Where a message of this type keeps what the plan's `properties` describe."""
    return "properties" if kind in NAMED_TYPES else "traits"


def name_of(message: Mapping[str, Any]) -> str | None:
    value = message.get("event" if message.get("type") == "track" else "name")
    return value if isinstance(value, str) else None


def check(message: Mapping[str, Any], plan: Plan) -> Verdict:
    """The verdict on one message (a Segment message as a JSON object) under a compiled plan."""
    kind = message.get("type")
    if not isinstance(kind, str):
        return Verdict(message, False, ())
    name = name_of(message)
    label = name or kind
    entry = plan.entry(kind, name)
    if entry is None:
        if kind not in NAMED_TYPES:
            return Verdict(message, False, ())  # identify/group without an entry: unchecked
        violation = Violation(label, None, "unplanned_event", f"the plan lists no {kind} {label!r}")
        held = plan.settings.unplanned_event == "quarantine"
        return Verdict(None if held else message, held, (violation,))
    bag = message.get(bag_of(kind))
    values: Mapping[str, Any] = bag if isinstance(bag, Mapping) else {}
    violations = _judge(label, entry, values)
    if not violations or plan.settings.unplanned_property == "keep":
        return Verdict(message, False, violations)
    if plan.direction == "outbound":
        return Verdict(None, True, violations)
    return Verdict(_without(message, bag_of(kind), violations), True, violations)


def _judge(label: str, entry: _Event, values: Mapping[str, Any]) -> tuple[Violation, ...]:
    found = [
        Violation(label, key, "required", f"{key!r} is required and missing")
        for key in entry.required
        if key not in values
    ]
    for key, value in values.items():
        rule = entry.rules.get(key)
        if rule is None:
            found.append(
                Violation(label, key, "unplanned_property", "not in the plan", sample(value))
            )
        elif (broken := _broken(rule, value)) is not None:
            found.append(Violation(label, key, broken[0], broken[1], sample(value)))
    return tuple(found)


def _broken(rule: _Rule, value: Any) -> tuple[str, str] | None:
    """The rule a value breaks and how, or None."""
    if rule.types and not any(is_type(value, t) for t in rule.types):
        return "type", f"is {json_type(value)}, not {' or '.join(sorted(rule.types))}"
    if rule.enum is not None and not any(_same(value, allowed) for allowed in rule.enum):
        return "enum", "is not one of the values allowed"
    if rule.pattern is not None and isinstance(value, str) and not matches(rule.pattern, value):
        if len(value) > MAX_SUBJECT_CHARS:
            return "pattern", f"is longer than {MAX_SUBJECT_CHARS} characters, never matched"
        return "pattern", f"does not match {rule.pattern.pattern!r}"
    return None


def _same(value: Any, allowed: Any) -> bool:
    """JSON equality: true is not 1 (Python says it is)."""
    return isinstance(value, bool) is isinstance(allowed, bool) and value == allowed


def is_type(value: Any, name: str) -> bool:
    if name == "integer":
        return json_type(value) == "integer"
    if name == "number":
        return json_type(value) in ("integer", "number")
    return json_type(value) == name


def json_type(value: Any) -> str:
    """The JSON type of a decoded value; a float without a fraction is an integer (JSON
    Schema's rule: 1.0 is an integer)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    return "array" if isinstance(value, list) else "unknown"


def sample(value: Any) -> Any:
    """A value short enough to list: strings cut, objects and arrays named by size."""
    if isinstance(value, str):
        return value[:SAMPLE_CHARS]
    if isinstance(value, Mapping):
        return f"<object of {len(value)} keys>"
    if isinstance(value, list):
        return f"<array of {len(value)} items>"
    return value


def _without(
    message: Mapping[str, Any], bag: str, violations: tuple[Violation, ...]
) -> dict[str, Any]:
    """A copy of the message without the properties at fault (the original is untouched)."""
    gone = {v.property for v in violations if v.rule != "required"}
    if not gone:
        return dict(message)
    kept = {k: v for k, v in message[bag].items() if k not in gone}
    return {**message, bag: kept}
