"""Regular expressions from a plan, compiled once and refused when they could backtrack for long.

Python's `re` backtracks and has no time limit, and a plan's `pattern` runs on every message.
So a pattern is refused, with the reason, when it is:
- longer than MAX_PATTERN_CHARS;
- a repeated group that itself holds a repetition or an alternation (`(a+)+`, `(a|aa)*`):
  the shapes whose backtracking grows exponentially with the input;
- holding more than MAX_UNBOUNDED repetitions without a small upper bound (`*`, `+`, `{n,}`,
  `{n,m}` with m > BOUNDED_MAX): each one multiplies the worst case by the input's length.
And a value is matched only when it is at most MAX_SUBJECT_CHARS long. Measured on this
machine: `.*.*x` searched in 1,024 characters of `a` takes 0.4 s, in 512 about 50 ms; three
such repetitions (`.*.*.*x`) took 69 s on 1,024, which is why a third is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_PATTERN_CHARS = 256
MAX_UNBOUNDED = 2
BOUNDED_MAX = 16
MAX_SUBJECT_CHARS = 512
_BRACES = re.compile(r"\{(\d*)(,?)(\d*)\}")


class UnsafePattern(ValueError):
    """A pattern refused; the message says why."""


@dataclass(slots=True)
class _Group:
    repeats_inside: bool = False  # holds a quantifier (or a quantified group)
    alternates: bool = False  # holds a `|` at its own level


def _quantifier(pattern: str, at: int) -> tuple[int, bool, bool] | None:
    """The quantifier starting at `at`: (its length, repeats more than once, unbounded)."""
    if at >= len(pattern):
        return None
    char = pattern[at]
    if char in "*+":
        return 1 + (pattern[at + 1 : at + 2] in ("?", "+")), True, True
    if char == "?":
        return 1 + (pattern[at + 1 : at + 2] in ("?", "+")), False, False
    if char == "{" and (found := _BRACES.match(pattern, at)):
        low, comma, high = found.groups()
        if not low and not high:
            return None  # a literal brace
        top = int(high) if high else (None if comma else int(low))
        unbounded = top is None or top > BOUNDED_MAX
        return found.end() - at, top is None or top > 1, unbounded
    return None


def _class_end(pattern: str, at: int) -> int:
    """The index after a character class `[...]` starting at `at`."""
    i = at + 1
    if pattern[i : i + 1] == "^":
        i += 1
    if pattern[i : i + 1] == "]":
        i += 1
    while i < len(pattern) and pattern[i] != "]":
        i += 2 if pattern[i] == "\\" else 1
    return i + 1


def check_shape(pattern: str) -> None:
    """Raises UnsafePattern for a pattern of a shape that can backtrack for long."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise UnsafePattern(f"is longer than {MAX_PATTERN_CHARS} characters")
    stack = [_Group()]
    unbounded = 0
    i = 0
    while i < len(pattern):
        char = pattern[i]
        closed: _Group | None = None
        if char == "\\":
            i += 2
        elif char == "[":
            i = _class_end(pattern, i)
        elif char == "(":
            stack.append(_Group())
            i += 1
            continue
        elif char == ")" and len(stack) > 1:
            closed = stack.pop()
            i += 1
        elif char == "|":
            stack[-1].alternates = True
            i += 1
            continue
        else:
            i += 1
        found = _quantifier(pattern, i)
        if found is None:
            if closed is not None and closed.repeats_inside:
                stack[-1].repeats_inside = True
            continue
        length, repeats, is_unbounded = found
        if closed is not None and repeats and (closed.repeats_inside or closed.alternates):
            raise UnsafePattern(
                "repeats a group that holds a repetition or an alternation (like (a+)+ or"
                " (a|b)*), which can take exponential time"
            )
        unbounded += is_unbounded
        if unbounded > MAX_UNBOUNDED:
            raise UnsafePattern(
                f"has more than {MAX_UNBOUNDED} unbounded repetitions (*, +, {{n,}}), which can"
                " take polynomial time of a high degree"
            )
        stack[-1].repeats_inside = True
        i += length


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """The compiled pattern, or UnsafePattern saying why it is refused."""
    check_shape(pattern)
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise UnsafePattern(f"is not a regular expression: {exc}") from None


def matches(compiled: re.Pattern[str], value: str) -> bool:
    """JSON Schema's rule: the pattern is found somewhere in the value (not anchored). A value
    over MAX_SUBJECT_CHARS is not matched at all (see the module's note)."""
    return len(value) <= MAX_SUBJECT_CHARS and compiled.search(value) is not None
