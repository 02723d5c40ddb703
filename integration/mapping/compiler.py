"""Compile a mapping once, then apply it to each message.

Compiling walks the mapping once, checks every piece and builds a closure for it, so that
applying it is a few function calls per field instead of a walk over the mapping's JSON
(mapping-kit validates and walks the mapping on every message).
"""

from __future__ import annotations

import difflib
from typing import Final

from integration.mapping import paths
from integration.mapping.directives import DIRECTIVES, UNSUPPORTED
from integration.mapping.errors import InvalidMapping, MappingFailed, Problem
from integration.mapping.nodes import Evaluate, refused
from integration.mapping.values import MISSING, type_name

# Segment's key for a directive that wraps all the other fields of a mapping (their
# `@transform` with the rest of the mapping as its `mapping`).
ROOT_DIRECTIVE_KEY: Final = "__segment_internal_directive"
# Segment's editor keeps its labels here, beside a directive; it changes nothing.
METADATA_KEY: Final = "_metadata"
# Deeper than any mapping a person writes, and far from Python's recursion limit (compiling
# and applying take a few frames per level).
MAX_DEPTH: Final = 64


class CompiledMapping:
    """A checked mapping, ready to apply to any number of messages."""

    __slots__ = ("_run", "where")

    def __init__(self, run: Evaluate, where: str) -> None:
        self._run = run
        self.where = where

    def apply(self, message: object) -> object:
        """The mapped message; None if the whole mapping resolves to nothing.

        Raises MappingFailed (naming the field) if this message cannot be mapped. The result
        may share nested objects with the message: copy before changing either."""
        if type(message) is not dict:
            raise MappingFailed(
                self.where, f"a message must be an object, got {type_name(message)}"
            )
        try:
            result = self._run(message)
        except RecursionError:
            # @flatten and @excludeWhenNull walk the message's own nesting, whatever its depth
            raise MappingFailed(self.where, "the message is nested too deeply to map") from None
        return None if result is MISSING else result


def compile_mapping(mapping: object, *, where: str = "mapping") -> CompiledMapping:
    """Check a mapping and compile it; raises InvalidMapping listing every problem found."""
    build = _Build()
    run = build.node(_unwrap_root(build, mapping, where), where)
    if build.problems:
        raise InvalidMapping(build.problems)
    return CompiledMapping(run, where)


def _unwrap_root(build: _Build, mapping: object, where: str) -> object:
    """Segment's root directive takes the other fields as its `mapping`."""
    if not isinstance(mapping, dict) or ROOT_DIRECTIVE_KEY not in mapping:
        return mapping
    at = paths.child(where, ROOT_DIRECTIVE_KEY)
    root = mapping[ROOT_DIRECTIVE_KEY]
    if not isinstance(root, dict) or len(root) != 1:
        build.refuse(at, "should be an object with exactly one directive")
        return {}
    [(name, options)] = root.items()
    if not isinstance(options, dict):
        build.refuse(paths.child(at, name), f"should be an object, not {type_name(options)}")
        return {}
    rest = {k: v for k, v in mapping.items() if k != ROOT_DIRECTIVE_KEY}
    return {name: {**options, "mapping": rest}}


class _Build:
    """One compilation: evaluators out, problems collected (so all are reported at once)."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.depth = 0

    def refuse(self, where: str, reason: str) -> None:
        self.problems.append(Problem(where, reason))

    def node(self, raw: object, where: str) -> Evaluate:
        if self.depth >= MAX_DEPTH:
            self.refuse(where, f"is nested more than {MAX_DEPTH} levels deep")
            return refused
        self.depth += 1
        try:
            return self._node(raw, where)
        finally:
            self.depth -= 1

    def _node(self, raw: object, where: str) -> Evaluate:
        if isinstance(raw, dict):
            directives = [k for k in raw if isinstance(k, str) and k.startswith("@")]
            if directives:
                return self._directive(raw, directives, where)
            return self._object(raw, where)
        if isinstance(raw, list):
            return self._array(raw, where)
        if raw is None or isinstance(raw, str | bool | int | float):
            return lambda payload: raw
        self.refuse(where, f"should be a JSON value, not {type(raw).__name__}")
        return refused

    def _directive(self, raw: dict[object, object], directives: list[str], where: str) -> Evaluate:
        others = [str(k) for k in raw if k not in directives and k != METADATA_KEY]
        if len(directives) > 1:
            self.refuse(
                where, f"has {len(directives)} directives ({', '.join(directives)}); one per object"
            )
            return refused
        [name] = directives
        if others:
            self.refuse(where, f"mixes the directive {name} with other keys ({', '.join(others)})")
            return refused
        at = f"{where}.{name}"
        compile_directive = DIRECTIVES.get(name)
        if compile_directive is None:
            self.refuse(at, UNSUPPORTED.get(name) or _unknown(name))
            return refused
        return compile_directive(self, raw[name], at)

    def _object(self, raw: dict[object, object], where: str) -> Evaluate:
        fields: list[tuple[str, Evaluate]] = []
        for key, value in raw.items():
            if not isinstance(key, str):
                self.refuse(where, f"has a key that is not a string: {key!r}")
                continue
            fields.append((key, self.node(value, paths.child(where, key))))

        def run(payload: object) -> object:
            out = {}
            for key, field in fields:
                value = field(payload)
                if value is not MISSING:  # undefined leaves the key out; null stays
                    out[key] = value
            return out

        return run

    def _array(self, raw: list[object], where: str) -> Evaluate:
        items = [self.node(v, paths.item(where, i)) for i, v in enumerate(raw)]
        # undefined in an array is written null, as JSON.stringify writes it
        return lambda payload: [None if (v := f(payload)) is MISSING else v for f in items]


def _unknown(name: str) -> str:
    close = difflib.get_close_matches(name, [*DIRECTIVES, *UNSUPPORTED], n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"unknown directive {name}{hint}"
