"""`@template` strings: `"Hello, {{traits.name}}!"`.

mapping-kit replaces `{{{path}}}` first, then `{{path}}`, each by the value's `String()`
(nothing for null or a missing value). A template without triple braces is split into
its pieces once, so rendering is one join; one with them keeps the two passes, because a
value put in by the first pass can itself hold `{{...}}` that the second pass reads.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from integration.mapping import paths
from integration.mapping.values import MISSING, to_string

Render = Callable[[object], str]

_TRIPLE = re.compile(r"\{\{\{([^}]+)\}\}\}")
_DOUBLE = re.compile(r"\{\{([^}]+)\}\}")


def problem(template: str) -> str | None:
    """An unclosed `{{` or a bad path inside braces, or None."""
    for match in _DOUBLE.finditer(template):
        inner = match.group(1).strip().lstrip("{")
        wrong = paths.problem(inner)
        if wrong:
            return f"{wrong} (in the braces at character {match.start() + 1})"
    rest = _DOUBLE.sub("", template)
    if "{{" in rest:
        return f"template {template!r} has {{{{ without a closing }}}}"
    return None


def compile_template(template: str) -> Render:
    if "{{{" in template:
        return lambda payload: render(template, payload)
    texts: list[str] = []
    lookups: list[paths.Lookup] = []
    end = 0
    for match in _DOUBLE.finditer(template):
        texts.append(template[end : match.start()])
        lookups.append(paths.lookup(paths.parse(match.group(1).strip())))
        end = match.end()
    if not lookups:
        return lambda payload: template
    texts.append(template[end:])
    # One str.format call fills every placeholder: the cheapest way to render in CPython.
    pattern = "{}".join(t.replace("{", "{{").replace("}", "}}") for t in texts)

    def run(payload: object) -> str:
        return pattern.format(*[_text(lookup(payload)) for lookup in lookups])

    return run


def render(template: str, payload: object) -> str:
    """The two passes as mapping-kit makes them, for templates read at run time."""

    def replace(match: re.Match[str]) -> str:
        return _text(paths.get(payload, paths.parse(match.group(1).strip())))

    return _DOUBLE.sub(replace, _TRIPLE.sub(replace, template))


def _text(value: object) -> str:
    if type(value) is str:
        return value
    if value is None or value is MISSING:
        return ""
    return to_string(value)
