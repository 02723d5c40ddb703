"""A tracking plan as a person writes it, validated with errors that name the path at fault.

    {"events": [
        {"type": "track", "name": "Order Completed",
         "properties": {"total": {"type": "number"},
                        "currency": {"type": "string", "enum": ["EUR", "USD"]},
                        "coupon": {"type": ["string", "null"], "pattern": "^[A-Z0-9]+$"}},
         "required": ["total", "currency"]},
        {"type": "identify", "properties": {"email": {"type": "string"}}}
    ]}

An entry is an event by type and name: `track` needs a name; `page` and `screen` may name one
(without one, the entry is every page or screen that no named entry takes); `identify` and
`group` take none, and their `properties` are the message's traits. Each property is a subset
of JSON Schema: `type` (one JSON type or a list), `enum`, `pattern`, `description`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from integration.errors import Unprocessable
from integration.plans.patterns import UnsafePattern, compile_pattern

JSON_TYPES = ("string", "number", "integer", "boolean", "object", "array", "null")
JsonType = Literal["string", "number", "integer", "boolean", "object", "array", "null"]
EVENT_TYPES = ("track", "page", "screen", "identify", "group")
NAMED_TYPES = ("track", "page", "screen")  # whose messages carry a name: event, or name
DIRECTIONS = ("inbound", "outbound")
MAX_EVENTS = 2000
MAX_PROPERTIES = 500
MAX_NAME_CHARS = 1024
Text = Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS, pattern=r"^[^\x00]*$")]


class _Strict(BaseModel):
    # A misspelt keyword (`requred`, `patern`) is an error, never a rule silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class PropertySchema(_Strict):
    type: JsonType | list[JsonType] | None = Field(
        None, description="a JSON type or a list of them; none: any type"
    )
    enum: list[Any] | None = Field(None, min_length=1, description="the values allowed")
    pattern: str | None = Field(
        None, description="a regular expression found in the value (strings only)"
    )
    description: str | None = None

    @field_validator("pattern")
    @classmethod
    def _safe(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                compile_pattern(value)
            except UnsafePattern as exc:
                raise ValueError(f"the pattern {exc}") from None
        return value

    def types(self) -> tuple[str, ...]:
        if self.type is None:
            return ()
        return (self.type,) if isinstance(self.type, str) else tuple(self.type)


class EventPlan(_Strict):
    type: Literal["track", "page", "screen", "identify", "group"]
    name: Text | None = None
    description: str | None = None
    properties: dict[Text, PropertySchema] = Field(default_factory=dict, max_length=MAX_PROPERTIES)
    required: list[Text] = Field(default_factory=list)

    def key(self) -> tuple[str, str | None]:
        return self.type, self.name


class PlanDocument(_Strict):
    events: list[EventPlan] = Field(default_factory=list, max_length=MAX_EVENTS)


class Settings(_Strict):
    unplanned_event: Literal["allow", "quarantine"] = Field(
        "allow", description="an event the plan does not list: allowed, or held in quarantine"
    )
    unplanned_property: Literal["keep", "quarantine"] = Field(
        "keep",
        description="a property the plan does not list, or one that breaks its rule: kept, or"
        " moved to quarantine (the whole message is kept there)",
    )


def path_of(raw: Any, loc: tuple[int | str, ...]) -> str:
    """pydantic's location as a path a person reads (events[2].properties.total.type): the
    parts that walk the document given, without the names pydantic adds for a union's
    members (`literal[...]`), which name no place in it."""
    out, here = "", raw
    for part in loc:
        if isinstance(here, list) and isinstance(part, int) and 0 <= part < len(here):
            out += f"[{part}]"
            here = here[part]
            continue
        if not isinstance(here, dict):
            break
        out += f".{part}" if out else str(part)
        if part not in here:
            break  # a field missing: its name is the path's end
        here = here[part]
    return out or "plan"


def invalid(path: str, words: str) -> Unprocessable:
    return Unprocessable(f"{path}: {words}", error="invalid_plan", field=path)


def parse_plan(raw: Any, *, root: str = "") -> PlanDocument:
    """The plan, or Unprocessable (422) naming the first path at fault; `root` is where the
    plan sits in what was sent (`plan` in the admin API's body), prefixed to the path."""

    def at(path: str) -> str:
        return f"{root}.{path}" if root and path != "plan" else (root or path)

    if not isinstance(raw, dict):
        raise invalid(at("plan"), "must be a JSON object")
    try:
        plan = PlanDocument.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        words = "is not a keyword here" if first["type"] == "extra_forbidden" else first["msg"]
        raise invalid(at(path_of(raw, tuple(first["loc"]))), words) from None
    _check_entries(plan, at)
    return plan


def _check_entries(plan: PlanDocument, path: Callable[[str], str]) -> None:
    """What one entry's fields cannot say alone: names by type, required names, no twins."""
    seen: dict[tuple[str, str | None], int] = {}
    for index, entry in enumerate(plan.events):
        at = path(f"events[{index}]")
        if entry.type == "track" and entry.name is None:
            raise invalid(f"{at}.name", "a track event needs its name")
        if entry.type not in NAMED_TYPES and entry.name is not None:
            raise invalid(f"{at}.name", f"{entry.type} messages carry no name")
        for position, name in enumerate(entry.required):
            if name not in entry.properties:
                raise invalid(f"{at}.required[{position}]", f"{name!r} is not in properties")
        if entry.key() in seen:
            raise invalid(at, f"repeats events[{seen[entry.key()]}] (same type and name)")
        seen[entry.key()] = index
