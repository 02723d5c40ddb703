"""Paths into a message (`$.properties.items[0].id`) and paths into a mapping (for errors).

A message path reads the way mapping-kit's `get` reads it: dots and `[0]` / `["key"]`
separate keys, a bracket not followed by a digit or a quote is part of the key
(`a[b]` is the key "a[b]"), and a leading `$.` may be left out.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

from integration.mapping.values import MISSING, is_falsy_scalar

Keys = tuple[str, ...]
Lookup = Callable[[object], object]

# Where mapping-kit's get splits a path: "[" before a quote or digit, ".", and "]" after one.
_SPLIT = re.compile(r"""\[(?=["'0-9])|\.|(?<=["'0-9])\]+""")
_QUOTES = re.compile(r"""['"]""")
_INDEX = re.compile(r"0|[1-9][0-9]*")
_IDENTIFIER = re.compile(r"[A-Za-z_$@][A-Za-z0-9_$@-]*")


@lru_cache(maxsize=1024)
def parse(path: str) -> Keys:
    """The keys of a path as mapping-kit's get splits it; `()` is the value itself."""
    if path in ("", "."):
        return ()
    return tuple(_QUOTES.sub("", part) for part in _SPLIT.split(path) if part)


def parse_reference(path: str) -> Keys:
    """The keys of a `@path` / `@arrayPath` reference, whose first `$.` is dropped."""
    return parse(path.replace("$.", "", 1))


def problem(path: str) -> str | None:
    """What is wrong with a path Segment would quietly read as something else, or None.

    Segment skips empty segments (`a..b` reads `a.b`) and reads an unclosed `[0` as an
    index; both are more likely typos than intent, so they are refused here."""
    body = path.replace("$.", "", 1) if path.startswith("$.") else path
    if body in ("", "."):
        return None
    if body.startswith("."):
        return f"path {path!r} starts with a dot"
    if body.endswith("."):
        return f"path {path!r} ends with a dot"
    if ".." in body:
        return f"path {path!r} has an empty segment at character {path.index('..') + 2}"
    for match in re.finditer(r"""\[(?=["'0-9])""", body):
        close = body.find("]", match.end())
        if close < 0:
            return f"path {path!r} has an unclosed [ at character {match.start() + 1}"
        inside = body[match.end() : close]
        if inside[0] in "\"'" and (len(inside) < 2 or inside[-1] != inside[0]):
            return f"path {path!r} has an unclosed quote at character {match.end() + 1}"
    return None


def step(value: object, key: str) -> object:
    """`value && value[key]` for one key, on JSON values."""
    if type(value) is dict:
        return value.get(key, MISSING)
    if is_falsy_scalar(value):
        return value  # JavaScript's && stops at a falsy value and yields it
    if isinstance(value, list | str) and _INDEX.fullmatch(key):
        index = int(key)
        return value[index] if index < len(value) else MISSING
    return MISSING


def get(value: object, keys: Keys) -> object:
    for key in keys:
        if type(value) is dict:
            value = value.get(key, MISSING)
            continue
        if is_falsy_scalar(value):
            return value
        value = step(value, key)
    return value


def lookup(keys: Keys) -> Lookup:
    """A reader for one path, with the common one- and two-key cases unrolled (the hot path
    of a mapping is mostly these)."""
    if not keys:
        return _itself
    if len(keys) == 1:
        (first,) = keys

        def one(value: object) -> object:
            if type(value) is dict:
                return value.get(first, MISSING)
            return step(value, first)

        return one
    if len(keys) == 2:
        first, second = keys

        def two(value: object) -> object:
            if type(value) is dict:
                inner = value.get(first, MISSING)
                if type(inner) is dict:
                    return inner.get(second, MISSING)
                return get(inner, (second,))
            return get(value, keys)

        return two
    return lambda value: get(value, keys)


def _itself(value: object) -> object:
    return value


def child(where: str, key: str) -> str:
    """`where` and one more key, written so the path can be read back: `a.b`, `a["b c"]`."""
    if _IDENTIFIER.fullmatch(key):
        return f"{where}.{key}"
    escaped = key.replace("\\", "\\\\").replace('"', '\\"')
    return f'{where}["{escaped}"]'


def item(where: str, index: int) -> str:
    return f"{where}[{index}]"
