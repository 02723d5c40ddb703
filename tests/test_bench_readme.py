"""bench/README.md's table of phases and targets is the one bench/phases.py and
bench/targets.py define, which the bench's report reads too: a target changed in one place
shows in both."""

from __future__ import annotations

from bench import phases


def test_the_bench_readme_lists_the_phases_and_targets_the_bench_checks() -> None:
    written = phases.in_readme(phases.README.read_text())
    assert written == phases.table(), "run `python -m bench.phases --write`"
