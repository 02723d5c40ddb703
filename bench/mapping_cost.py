"""What a mapping costs per event on the hot path (#24): a realistic 10-field mapping and its
trigger, compiled once (integration/mapping), then applied to the bench's usual ~1 KB track
message (bench/payloads.py), many times over. Pure CPU in this process: no server, no I/O.

    python -m bench.mapping_cost [--quick]

The target is 10 µs per event. Time is this thread's CPU time (what the work costs, not how
long other processes on a shared machine kept it waiting); the figure is the median of the
rounds, and the best round is shown too.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, Final

from bench import payloads
from bench.report import Row
from bench.targets import MAPPING_US
from integration.environments.mappings import compile_definition
from integration.mapping import compile_mapping, parse_condition

# Ten fields of the kinds a destination mapping holds: plain paths, a template, a case
# change, a conditional default, a replace, a nested path and a null-dropping field.
MAPPING: Final[dict[str, Any]] = {
    "user_id": {"@path": "$.userId"},
    "event_name": {"@template": "{{event}}: {{properties.task}}"},
    "occurred_at": {"@path": "$.timestamp"},
    "company": {"@path": "$.properties.company_id"},
    "plan": {"@case": {"operator": "upper", "value": {"@path": "$.properties.plan"}}},
    "step": {
        "@if": {
            "exists": {"@path": "$.properties.step"},
            "then": {"@path": "$.properties.step"},
            "else": 1,
        }
    },
    "duration_ms": {"@path": "$.properties.duration_ms"},
    "variant": {"@path": "$.properties.experiment.variant"},
    "page": {
        "@replace": {
            "value": {"@path": "$.context.page.path"},
            "pattern": "/app/",
            "replacement": "/",
        }
    },
    "ip": {"@excludeWhenNull": {"@path": "$.context.ip"}},
}
TRIGGER: Final = f'type = "track" and event = "{payloads.EVENT}"'


@dataclass(frozen=True)
class MappingCost:
    fields: int
    events: int  # per round
    rounds: int
    mapping_us: float  # per event, median over the rounds
    mapping_best_us: float  # per event, the fastest round
    trigger_us: float  # per event, median over the rounds
    # The step as the pipeline runs it (environments/mappings.py, Definition.apply): trigger,
    # mapping into `properties`, the result merged and validated again (spec.parse, 32 KB).
    step_us: float

    @property
    def total_us(self) -> float:
        return self.mapping_us + self.trigger_us

    @property
    def within_target(self) -> bool:
        return MAPPING_US.at_most(self.total_us)

    def line(self) -> str:
        verdict = "within" if self.within_target else "OVER"
        return (
            f"mapping ({self.fields} fields): {self.mapping_us:.2f} µs/event"
            f" (best round {self.mapping_best_us:.2f}), trigger {self.trigger_us:.2f} µs/event,"
            f" together {self.total_us:.2f} µs: {verdict} the target, {MAPPING_US.text}"
            f" ({self.rounds} rounds of {self.events} events); the pipeline's step, the mapped"
            f" message validated again: {self.step_us:.2f} µs/event"
        )


def rows(cost: MappingCost) -> list[Row]:
    return [
        Row(
            f"mapping: a {cost.fields}-field mapping and its trigger, this thread's CPU per event"
            f" (median of {cost.rounds} rounds of {cost.events:,}; mapping"
            f" {cost.mapping_us:.2f} µs, trigger {cost.trigger_us:.2f} µs)",
            f"{cost.total_us:.2f} µs",
            target=MAPPING_US.text,
            met=cost.within_target,
        ),
        Row(
            "mapping: the pipeline's step (Definition.apply: trigger, mapping, the mapped message"
            " validated again by spec.parse and its 32 KB rule), CPU per event",
            f"{cost.step_us:.2f} µs",
        ),
    ]


def measure(quick: bool) -> MappingCost:
    """Compile once, then time applying the mapping and matching the trigger per event."""
    events, rounds = (2_000, 3) if quick else (20_000, 7)
    mapping = compile_mapping(MAPPING)
    trigger = parse_condition(TRIGGER)
    messages = [payloads.track(f"m-{n}", n, "2026-12-07T14:00:00.000Z") for n in range(events)]
    first = mapping.apply(messages[0])
    assert trigger.matches(messages[0]) and isinstance(first, dict) and len(first) == len(MAPPING)
    mapping_rounds = [_per_event_us(mapping.apply, messages) for _ in range(rounds)]
    trigger_rounds = [_per_event_us(trigger.matches, messages) for _ in range(rounds)]
    step = compile_definition(TRIGGER, {"properties": MAPPING}, "outbound")
    now = datetime.now(UTC)
    assert step.apply(messages[0], now=now).error is None
    step_rounds = [_per_event_us(partial(step.apply, now=now), messages) for _ in range(rounds)]
    return MappingCost(
        fields=len(MAPPING),
        events=events,
        rounds=rounds,
        mapping_us=statistics.median(mapping_rounds),
        mapping_best_us=min(mapping_rounds),
        trigger_us=statistics.median(trigger_rounds),
        step_us=statistics.median(step_rounds),
    )


def _per_event_us(run: Any, messages: list[dict[str, Any]]) -> float:
    started = time.thread_time_ns()
    for message in messages:
        run(message)
    return (time.thread_time_ns() - started) / len(messages) / 1_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer events and rounds")
    print(measure(parser.parse_args().quick).line())


if __name__ == "__main__":
    main()
