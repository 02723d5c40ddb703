"""The directives: each compiles its options once into an evaluator.

Run-time behaviour follows mapping-kit's index.ts directive by directive, quirks included
(they decide what a Segment mapping outputs): `@if`'s `else` counts only when truthy, and
`@replace` on a value that is not text gives "". What mapping-kit would only find out on a
message (an unknown `@case` operator, a `@merge` without a direction, a missing `@flatten`
separator) is refused when the mapping is compiled instead, as are options no directive
reads (a typo such as `exist`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Final

from integration.mapping import paths, templates
from integration.mapping.errors import MappingFailed
from integration.mapping.nodes import Build, Evaluate, nothing, refused
from integration.mapping.values import (
    MISSING,
    is_truthy,
    loosely_blank,
    to_string,
    type_name,
)

Compile = Callable[[Build, object, str], Evaluate]

# mapping-kit refuses longer ones (its MAX_PATTERN_LENGTH and MAX_REPLACEMENT_LENGTH).
MAX_PATTERN_LENGTH: Final = 10
MAX_REPLACEMENT_LENGTH: Final = 10


def _options(
    build: Build, raw: object, where: str, *, allowed: tuple[str, ...], required: tuple[str, ...]
) -> dict[str, object] | None:
    """The directive's options object, or None (and the problems noted) if it is not one."""
    name = where.rsplit(".", 1)[-1]
    if not isinstance(raw, dict) or any(str(k).startswith("@") for k in raw):
        build.refuse(where, f"{name} takes an object with {', '.join(allowed)}")
        return None
    ok = True
    for key in raw:
        if key not in allowed:
            build.refuse(
                paths.child(where, key),
                f"{name} has no option {key!r} (it takes {', '.join(allowed)})",
            )
            ok = False
    for key in required:
        if key not in raw:
            build.refuse(where, f"{name} needs {key!r}")
            ok = False
    return raw if ok else None


def _string_or_directive(build: Build, raw: object, where: str) -> bool:
    if isinstance(raw, str) or _is_directive(raw):
        return True
    build.refuse(where, f"should be a string or a directive, not {type_name(raw)}")
    return False


def _is_directive(raw: object) -> bool:
    return isinstance(raw, dict) and any(str(k).startswith("@") for k in raw)


def _text_option(
    build: Build,
    options: dict[str, object],
    key: str,
    where: str,
    *,
    shortest: int,
    longest: int | None = None,
) -> str | None:
    value = options.get(key)
    if key not in options:
        return None
    at = paths.child(where, key)
    if not isinstance(value, str):
        build.refuse(at, f"should be a string, not {type_name(value)}")
    elif longest is not None and not shortest <= len(value) <= longest:
        build.refuse(at, f"should be {shortest} to {longest} characters long, not {len(value)}")
    elif len(value) < shortest:
        build.refuse(at, "should not be empty")
    else:
        return value
    return None


def _choice(
    build: Build, options: dict[str, object], key: str, where: str, choices: tuple[str, ...]
) -> str | None:
    value = options.get(key)
    if value in choices:
        return str(value)
    build.refuse(paths.child(where, key), f"should be one of {', '.join(choices)}, not {value!r}")
    return None


def _flag(build: Build, options: dict[str, object], key: str, where: str, default: bool) -> bool:
    value = options.get(key, default)
    if not isinstance(value, bool):
        build.refuse(paths.child(where, key), f"should be true or false, not {value!r}")
        return default
    return value


# --- @path, @template, @literal ------------------------------------------------------------


def compile_path(build: Build, raw: object, where: str) -> Evaluate:
    if not _string_or_directive(build, raw, where):
        return refused
    if isinstance(raw, str):
        wrong = paths.problem(raw)
        if wrong:
            build.refuse(where, wrong)
            return refused
        return paths.lookup(paths.parse_reference(raw))
    compute = build.node(raw, where)

    def dynamic(payload: object) -> object:
        return paths.get(payload, paths.parse_reference(_text_of(compute(payload), where)))

    return dynamic


def compile_template(build: Build, raw: object, where: str) -> Evaluate:
    if not _string_or_directive(build, raw, where):
        return refused
    if isinstance(raw, str):
        wrong = templates.problem(raw)
        if wrong:
            build.refuse(where, wrong)
            return refused
        return templates.compile_template(raw)
    compute = build.node(raw, where)
    return lambda payload: templates.render(_text_of(compute(payload), where), payload)


def _text_of(value: object, where: str) -> str:
    """A directive's argument computed at run time, which must be text (mapping-kit's
    string directives throw the same way)."""
    if not isinstance(value, str):
        name = where.rsplit(".", 1)[-1]
        raise MappingFailed(where, f"{name}: expected string, got {type_name(value)}")
    return value


def compile_literal(build: Build, raw: object, where: str) -> Evaluate:
    # mapping-kit resolves what @literal holds, directives inside it included.
    return build.node(raw, where)


# --- @if --------------------------------------------------------------------------------------


def compile_if(build: Build, raw: object, where: str) -> Evaluate:
    options = _options(build, raw, where, allowed=("exists", "blank", "then", "else"), required=())
    if options is None:
        return refused
    tests = [key for key in ("exists", "blank") if key in options]
    if len(tests) != 1:
        build.refuse(where, "@if needs exactly one of 'exists' or 'blank'")
        return refused
    if "then" not in options and "else" not in options:
        build.refuse(where, "@if needs 'then' or 'else'")
        return refused
    test = tests[0]
    if not is_truthy(options[test]):
        # mapping-kit throws "@if requires an exists key or a blank key" on each message
        build.refuse(
            paths.child(where, test),
            f"is {options[test]!r}, which mapping-kit refuses: give a directive or a truthy value",
        )
        return refused
    condition = build.node(options[test], paths.child(where, test))
    then = build.node(options["then"], paths.child(where, "then")) if "then" in options else None
    # mapping-kit takes `else` only when it is truthy: "else": false or 0 gives nothing.
    other = options.get("else", MISSING)
    otherwise = build.node(other, paths.child(where, "else")) if is_truthy(other) else None
    blank = test == "blank"

    def run(payload: object) -> object:
        value = condition(payload)
        holds = value is not MISSING and value is not None
        if holds and blank:
            holds = not loosely_blank(value)
        if holds:
            return then(payload) if then is not None else MISSING
        return otherwise(payload) if otherwise is not None else MISSING

    return run


# --- @case, @replace --------------------------------------------------------------------------


def compile_case(build: Build, raw: object, where: str) -> Evaluate:
    options = _options(build, raw, where, allowed=("operator", "value"), required=("operator",))
    if options is None:
        return refused
    operator = _choice(build, options, "operator", where, ("lower", "upper"))
    value = options.get("value", MISSING)
    if value is not MISSING and not _string_or_directive(build, value, paths.child(where, "value")):
        return refused
    if operator is None:
        return refused
    if not is_truthy(value):
        return nothing  # mapping-kit gives nothing for a missing or empty value
    compute = build.node(value, paths.child(where, "value"))
    change = str.lower if operator == "lower" else str.upper

    def run(payload: object) -> object:
        result = compute(payload)
        return change(result) if isinstance(result, str) else result

    return run


def compile_replace(build: Build, raw: object, where: str) -> Evaluate:
    options = _options(
        build,
        raw,
        where,
        allowed=(
            "value",
            "pattern",
            "replacement",
            "pattern2",
            "replacement2",
            "ignorecase",
            "global",
        ),
        required=("value", "pattern"),
    )
    if options is None:
        return refused
    pattern = _text_option(build, options, "pattern", where, shortest=1, longest=MAX_PATTERN_LENGTH)
    replacement = _text_option(
        build, options, "replacement", where, shortest=0, longest=MAX_REPLACEMENT_LENGTH
    )
    second = _text_option(build, options, "pattern2", where, shortest=1, longest=MAX_PATTERN_LENGTH)
    replacement2 = _text_option(
        build, options, "replacement2", where, shortest=0, longest=MAX_REPLACEMENT_LENGTH
    )
    ignorecase = _flag(build, options, "ignorecase", where, False)
    everywhere = _flag(build, options, "global", where, True)
    value = options["value"]
    if not _string_or_directive(build, value, paths.child(where, "value")) or pattern is None:
        return refused
    if not is_truthy(value):
        return nothing  # mapping-kit gives nothing for an empty value
    compute = build.node(value, paths.child(where, "value"))
    steps = [_replacer(pattern, replacement or "", ignorecase=ignorecase, everywhere=everywhere)]
    if second is not None:
        steps.append(
            _replacer(second, replacement2 or "", ignorecase=ignorecase, everywhere=everywhere)
        )

    def run(payload: object) -> object:
        result = compute(payload)
        if isinstance(result, bool | int | float):
            result = to_string(result)  # mapping-kit replaces in true, false and numbers too
        if not isinstance(result, str):
            return ""  # what mapping-kit gives for null, a missing value or an object
        for replace in steps:
            result = replace(result)
        return result

    return run


def _replacer(
    pattern: str, replacement: str, *, ignorecase: bool, everywhere: bool
) -> Callable[[str], str]:
    """Replace the pattern as text (mapping-kit escapes it) with JavaScript's replacement
    syntax: `$&` is the match, `` $` `` and `$'` what comes before and after it, `$$` a $."""
    regex = re.compile(re.escape(pattern), re.IGNORECASE if ignorecase else 0)
    count = 0 if everywhere else 1
    pieces = re.split(r"(\$[$&`'])", replacement)

    def expand(match: re.Match[str]) -> str:
        text = match.string
        special = {
            "$$": "$",
            "$&": match.group(0),
            "$`": text[: match.start()],
            "$'": text[match.end() :],
        }
        return "".join(special.get(piece, piece) for piece in pieces)

    if len(pieces) > 1:
        return lambda value: regex.sub(expand, value, count)
    if not ignorecase:
        # The pattern is plain text, so str.replace does the same, several times faster.
        limit = -1 if everywhere else 1
        return lambda value: value.replace(pattern, replacement, limit)
    return lambda value: regex.sub(lambda _: replacement, value, count)


# --- @arrayPath -------------------------------------------------------------------------------


def compile_array_path(build: Build, raw: object, where: str) -> Evaluate:
    if not isinstance(raw, list) or not 1 <= len(raw) <= 2:
        build.refuse(where, "@arrayPath takes [path] or [path, item shape]")
        return refused
    source = raw[0]
    at = paths.item(where, 0)
    if not _string_or_directive(build, source, at):
        return refused
    root = compile_path(build, source, at) if isinstance(source, str) else build.node(source, at)
    shape = raw[1] if len(raw) == 2 else {}
    if not isinstance(shape, dict):
        build.refuse(
            paths.item(where, 1), f"should be an object (each item's shape), not {type_name(shape)}"
        )
        return refused
    if not shape:
        return root
    each = build.node(shape, paths.item(where, 1))

    def run(payload: object) -> object:
        found = root(payload)
        if isinstance(found, dict):
            found = [found]  # one object is a list of one
        elif not isinstance(found, list):
            return found
        # An item that maps to nothing is null, as JSON.stringify writes undefined in arrays.
        return [None if (v := each(item)) is MISSING else v for item in found]

    return run


# --- @json, @flatten, @merge ------------------------------------------------------------------


def compile_json(build: Build, raw: object, where: str) -> Evaluate:
    options = _options(build, raw, where, allowed=("mode", "value"), required=("mode", "value"))
    if options is None:
        return refused
    mode = _choice(build, options, "mode", where, ("encode", "decode"))
    if not is_truthy(options["value"]):
        build.refuse(
            paths.child(where, "value"), "should be a directive or a value that is not empty"
        )
        return refused
    compute = build.node(options["value"], paths.child(where, "value"))
    if mode == "encode":
        return lambda payload: _encode(compute(payload))
    return lambda payload: _decode(compute(payload))


def _encode(value: object) -> object:
    if value is MISSING:
        return MISSING  # JSON.stringify(undefined) is undefined
    return json.dumps(_integral(value), separators=(",", ":"), ensure_ascii=False)


def _integral(value: object) -> object:
    """2.0 as JavaScript writes it (2), so an encoded number reads the same as Segment's."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    if isinstance(value, list):
        return [_integral(v) for v in value]
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    return value


def _decode(value: object) -> object:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value, parse_constant=_no_constant)
    except ValueError:
        return value  # mapping-kit gives back what does not parse


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def compile_flatten(build: Build, raw: object, where: str) -> Evaluate:
    options = _options(
        build,
        raw,
        where,
        allowed=("value", "separator", "omitArrays"),
        required=("value", "separator"),
    )
    if options is None:
        return refused
    separator = _text_option(build, options, "separator", where, shortest=1)
    keep_arrays = _flag(build, options, "omitArrays", where, False)
    compute = build.node(options["value"], paths.child(where, "value"))
    if separator is None:
        return refused

    def run(payload: object) -> object:
        out: dict[str, object] = {}
        _flatten(compute(payload), "", separator, keep_arrays, out)
        return out

    return run


def _flatten(
    value: object, prefix: str, separator: str, keep_arrays: bool, out: dict[str, object]
) -> None:
    if isinstance(value, dict):
        entries: list[tuple[str, object]] = list(value.items())
    elif isinstance(value, list) and not keep_arrays:
        entries = [(str(i), v) for i, v in enumerate(value)]
    else:
        if value is not MISSING:
            out[prefix] = value
        return
    for key, inner in entries:
        _flatten(inner, f"{prefix}{separator}{key}" if prefix else key, separator, keep_arrays, out)


def compile_merge(build: Build, raw: object, where: str) -> Evaluate:
    options = _options(
        build, raw, where, allowed=("objects", "direction"), required=("objects", "direction")
    )
    if options is None:
        return refused
    direction = _choice(build, options, "direction", where, ("left", "right"))
    objects = options["objects"]
    at = paths.child(where, "objects")
    if not isinstance(objects, list):
        build.refuse(at, f"should be an array of objects, not {type_name(objects)}")
        return refused
    parts: list[Evaluate] = []
    for index, part in enumerate(objects):
        if not isinstance(part, dict):
            build.refuse(
                paths.item(at, index), f"should be an object or a directive, not {type_name(part)}"
            )
            continue
        parts.append(build.node(part, paths.item(at, index)))
    if direction == "left":
        parts.reverse()  # the first object wins: it is assigned last

    def run(payload: object) -> object:
        out: dict[str, object] = {}
        for part in parts:
            _assign(out, part(payload))
        return out

    return run


def _assign(out: dict[str, object], value: object) -> None:
    """Object.assign's reading of one source: arrays and strings by index, scalars not at all."""
    if isinstance(value, dict):
        out.update(value)
    elif isinstance(value, list | str):
        out.update((str(i), v) for i, v in enumerate(value))


# --- @transform, @excludeWhenNull -------------------------------------------------------------


def compile_transform(build: Build, raw: object, where: str) -> Evaluate:
    options = _options(
        build, raw, where, allowed=("apply", "mapping"), required=("apply", "mapping")
    )
    if options is None:
        return refused
    steps = []
    for key in ("apply", "mapping"):
        if not isinstance(options[key], dict):
            build.refuse(
                paths.child(where, key),
                f"should be an object or a directive, not {type_name(options[key])}",
            )
            return refused
        steps.append(build.node(options[key], paths.child(where, key)))
    first, then = steps

    def run(payload: object) -> object:
        if type(payload) is not dict:
            raise MappingFailed(where, f"@transform needs an object, got {type_name(payload)}")
        return then(first(payload))

    return run


def compile_exclude_when_null(build: Build, raw: object, where: str) -> Evaluate:
    compute = build.node(raw, where)

    def run(payload: object) -> object:
        value = compute(payload)
        if value is None:
            return MISSING
        return _without_nulls(value) if isinstance(value, dict) else value

    return run


def _without_nulls(value: dict[str, object]) -> dict[str, object]:
    """Null keys dropped, in nested objects too (not inside arrays, as in mapping-kit)."""
    return {
        k: _without_nulls(v) if isinstance(v, dict) else v
        for k, v in value.items()
        if v is not None
    }


DIRECTIVES: Final[dict[str, Compile]] = {
    "@path": compile_path,
    "@template": compile_template,
    "@literal": compile_literal,
    "@if": compile_if,
    "@case": compile_case,
    "@replace": compile_replace,
    "@arrayPath": compile_array_path,
    "@json": compile_json,
    "@flatten": compile_flatten,
    "@merge": compile_merge,
    "@transform": compile_transform,
    "@excludeWhenNull": compile_exclude_when_null,
}

SUPPORTED_DIRECTIVES: Final = tuple(DIRECTIVES)

# In mapping-kit but not here, with the reason the refusal gives.
UNSUPPORTED: Final = {
    "@liquid": "@liquid (Liquid templates) is not supported; use @template or @if",
}
