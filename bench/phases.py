"""The phases of `make bench` as bench/README.md's table lists them, each with its targets
(bench/targets.py). The table in the README is this list, written by
`python -m bench.phases` and checked by tests/test_bench_readme.py.

Adding a phase (say `bench/mapping_cost.py`, a measurement with a target per event):
1. Its module holds the unit: a frozen dataclass of what it measured, a function that measures
   it (`measure(...) -> MappingCost`; a standalone `main()` if it can run alone, as
   bench/claim_cost.py does) and `rows(result) -> list[Row]` for the report, whose target cells
   and met? checks read a `Target` (bench/isolation.py and bench/claim_cost.py have this shape).
2. Its target goes in bench/targets.py, once (e.g. `MAPPING_US = Target("mapping cost per
   event", "≤ 10 µs per event", 10)`; the check is `MAPPING_US.at_most(result.per_event_us)`).
3. A field on `Run` (bench/context.py) for its result; in bench/run.py a step in
   `run_phases()` (inside `attempt(...)`, so that a failure is reported and the run goes on,
   and under the `--*-only` options it belongs to) and its rows in `rows_for`.
4. An entry in PHASES below; then `python -m bench.phases --write` rewrites the README's table.

No imports beyond bench.targets and the standard library (the test reads this without the
bench's dependencies).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from bench import targets as t

README = Path(__file__).resolve().parent / "README.md"
BEGIN = "<!-- phases: written by `python -m bench.phases --write` from bench/phases.py -->"
END = "<!-- end of phases -->"


@dataclass(frozen=True)
class Phase:
    number: str
    what: str
    targets: tuple[t.Target, ...] = ()
    reported: str = "—"  # what stands in the target column when no target applies

    def cell(self) -> str:
        return "; ".join(target.readme() for target in self.targets) or self.reported


PHASES = (
    Phase(
        "1-2",
        "single messages, wrk `-t2 -c64 -d20s`, bare endpoint then ours; every 2xx must be one"
        " row in `events`",
        (t.SINGLE_VS_BARE, t.SERVER_RSS_MB),
    ),
    Phase(
        "3",
        "arrays of 100 messages, `-c16 -d20s`; then the Postgres floor (the same rows by COPY)",
        (t.BATCH_EVENTS_PER_S,),
    ),
    Phase(
        "3b",
        "requests of 4,000 events (Webhooks (Actions)' largest, signed over the first event),"
        " one after another",
        (t.BIG_BATCH_P99_S,),
    ),
    Phase(
        "4",
        "paced at half of ours' peak, 15 s: each connection waits a random, exponentially"
        " distributed time (mean from a short trial run, so the achieved rate is the half asked"
        " for), so arrivals are a Poisson stream rather than 64 connections in step",
        (t.PACED_P99_MS,),
    ),
    Phase("5", "the bare endpoint again, after ours"),
    Phase(
        "5b",
        "single messages, both servers as two processes (`--workers 2`)",
        reported="reported",
    ),
    Phase(
        "5c",
        "identity/alias-heavy batches of 500 (30% identify, 5% alias, the rest track) through"
        " `ingest.store`, with issue #25's guards and with the path before them, 80 of each,"
        " interleaved, on a database of their own (bench/identity_cost.py)",
        (t.IDENTITY_GUARDS,),
    ),
    Phase(
        "5d",
        "a user with 10,000 linked anonymousIds and another's 10,000 aliased in: their identity"
        " (API) and console page, the alias's merge and the unmerge, on a database and server of"
        " their own (bench/identity_growth.py)",
        reported="reported",
    ),
    Phase(
        "6-7",
        "50,000 events to the sink: segment-analytics-python, then ours (publish API + one worker)",
        reported="ratio reported",
    ),
    Phase("8", "10 events every 10 ms for 15 s, publish → sink receipt", (t.PUBLISH_P99_MS,)),
    Phase(
        "8b",
        "per-person order: one claim of 2,000 of 20,000 pending rows, Postgres's time, against"
        " the claim without order (bench/claim_cost.py, on a fresh outbox)",
        reported="ratio reported",
    ),
    Phase(
        "8c",
        "isolation (issue #23): 1,000 events/s from one environment while another publishes at"
        " 200/s and its Segment hangs every request, against the same with that Segment healthy;"
        " windows of 10 s, four of each, interleaved in one run (bench/isolation.py)",
        (t.ISOLATION_RATIO,),
    ),
    Phase(
        "8d",
        "a realistic 10-field mapping (Segment's mapping-kit) and its trigger, compiled once,"
        " applied to the bench's ~1 KB track messages: this thread's CPU per event"
        " (bench/mapping_cost.py)",
        (t.MAPPING_US,),
    ),
    Phase(
        "9",
        "the /v1 intake: 20,000 events from analytics-python through `/v1/batch` (worker"
        " delivering) and straight to the sink, first track() → the sink holds all; again with"
        " 4 consumer threads each side; then track() → sink receipt at 1,000 events/s for 15 s,"
        " both ways",
        (t.INTAKE_VS_DIRECT, t.INTAKE_P99_MS),
    ),
)


def table() -> str:
    lines = ["| # | phase | target |", "|---|---|---|"]
    lines += [f"| {p.number} | {p.what} | {p.cell()} |" for p in PHASES]
    return "\n".join([BEGIN, *lines, END])


def in_readme(text: str) -> str:
    """The README's table of phases, between its markers."""
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[start:end]


def main() -> None:
    text = README.read_text()
    if "--write" in sys.argv[1:]:
        README.write_text(text.replace(in_readme(text), table()))
    else:
        print(table())


if __name__ == "__main__":
    main()
